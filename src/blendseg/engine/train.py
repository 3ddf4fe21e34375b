"""The training loop: optimiser, warmup + multi-step LR, AMP, clipping, DDP, time budget, checkpoints, eval.

A plain function (``fit``) over plain parts; the model computes its own losses in ``forward`` (so DDP sees
every parameter that takes part in a loss).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import SolverConfig, TrainConfig, to_dict
from .checkpoint import load_checkpoint, save_checkpoint
from .dist import get_world_size, is_dist, is_main_process, reduce_mean
from .runlog import RunLog, save_train_batch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what schedulers (SLURM, Kubernetes) and Ctrl-C send


class TrainingStopped(RuntimeError):
    """Training ended early on purpose (a stop signal, a non-finite loss): a one-line ``message`` and the process
    ``exit_code`` for the command line; what was saved is said in the message."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteLoss(FloatingPointError):
    """A loss term became NaN or inf; ``terms`` names them."""

    def __init__(self, it: int, losses: dict[str, Tensor]) -> None:
        values = {k: float(v.detach()) for k, v in losses.items()}
        self.terms = [k for k, v in values.items() if not math.isfinite(v)] or ["(another process)"]
        others = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k not in self.terms)
        super().__init__(
            f"the loss became non-finite at iteration {it}: "
            + ", ".join(f"{k}={values.get(k)}" for k in self.terms)
            + (f" (others: {others})" if others else "")
        )


def _agree(value: float, op: str) -> float:
    """``value`` reduced over processes with "min" or "max" (every rank then takes the same branch)."""
    if not is_dist():
        return value
    t = torch.tensor(float(value))
    torch.distributed.all_reduce(t, op=getattr(torch.distributed.ReduceOp, op.upper()))
    return float(t)


NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def build_optimizer(model: nn.Module, solver: SolverConfig) -> torch.optim.Optimizer:
    """SGD (momentum) or AdamW; norm-layer parameters get ``weight_decay_norm`` (detectron2 param groups)."""
    norm_params, other = [], []
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if p.requires_grad:
                (norm_params if isinstance(module, NORM_TYPES) else other).append(p)
    groups = [
        {"params": other, "weight_decay": solver.weight_decay},
        {"params": norm_params, "weight_decay": solver.weight_decay_norm},
    ]
    if solver.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=solver.base_lr, momentum=solver.momentum)
    if solver.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=solver.base_lr)
    raise ValueError(f"unknown optimizer {solver.optimizer!r} (sgd or adamw)")


def lr_factor(it: int, progress_iter: float, solver: SolverConfig) -> float:
    """detectron2 WarmupMultiStepLR: warmup on the real iteration, step decays on ``progress_iter``.

    ``progress_iter`` is the iteration itself, or under a time budget the budget fraction spent x max_iter, so a
    time-bounded run still decays at the same fractions of its length.
    """
    factor = solver.gamma ** bisect.bisect_right(list(solver.steps), progress_iter)
    if it < solver.warmup_iters:
        if solver.warmup_method == "constant":
            factor *= solver.warmup_factor
        elif solver.warmup_method == "linear":
            alpha = it / solver.warmup_iters
            factor *= solver.warmup_factor * (1 - alpha) + alpha
        else:
            raise ValueError(f"unknown warmup_method {solver.warmup_method!r}")
    return factor


def infinite(loader, epoch: int = 0, start: int = 0) -> Iterator[tuple[int, int, object]]:
    """(epoch, index of the next batch in it, batch) forever, from batch ``start`` of ``epoch`` (a resumed run
    continues the interrupted epoch where it stopped: the training loader's batch sampler can start anywhere)."""
    while True:
        batches = getattr(loader, "batch_sampler", None)
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch, start)
        elif start:
            raise ValueError("this loader cannot start an epoch part-way (no EpochBatches batch sampler)")
        for i, batch in enumerate(loader, start):
            yield epoch, i + 1, batch
        epoch, start = epoch + 1, 0


def rng_state() -> dict:
    """The main process's random generators (the data workers' randomness is a function of the sample)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, images, targets: list[dict],
    solver: SolverConfig, device: torch.device, it: int,
) -> dict[str, Tensor]:  # fmt: skip
    """One optimisation step of ``model`` (possibly DDP-wrapped); returns the detached losses."""
    with torch.autocast(device.type, enabled=solver.amp):
        out = model(images.to(device), targets)
    loss = sum(out.losses.values())
    if not _agree(float(torch.isfinite(loss)), "min"):  # before backward, so no process is left waiting in it
        raise NonFiniteLoss(it, out.losses)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if solver.clip_grad_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), solver.clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    return {"loss": loss.detach(), **{k: v.detach() for k, v in out.losses.items()}}


def _resolve_schedule(solver: SolverConfig, iters_per_epoch: int) -> SolverConfig:
    """With ``epochs`` > 0, max_iter = epochs x loader length and the steps keep their fractions."""
    if solver.epochs <= 0:
        return solver
    max_iter = solver.epochs * iters_per_epoch
    steps = tuple(round(s / solver.max_iter * max_iter) for s in solver.steps)
    return dataclasses.replace(solver, steps=steps, max_iter=max_iter)


def fit(
    model: nn.Module,
    train_loader,
    cfg: TrainConfig,
    out_dir: str | Path,
    device: torch.device,
    evaluate_fn: Callable[[nn.Module], dict] | None = None,
    resume: bool = False,
    extra_state: dict | None = None,
    class_names: list[str] | None = None,
) -> dict:
    """Train ``model`` per ``cfg.solver``; writes ``weights/last.pt`` (and ``best.pt``) and the run log
    (:mod:`~blendseg.engine.runlog`: train_log.jsonl, results.csv / .png, train_batch*.jpg with ``class_names``).

    Under ``solver.max_minutes`` the run stops when the budget is spent, whatever the iteration count, and the LR
    steps happen at the same fractions of the budget as of ``max_iter`` (``max_iter`` only sets those fractions).
    Returns the last evaluation metrics (or {}, plus ``skipped_images`` when unreadable training images were
    skipped).

    Faults: SIGTERM / SIGINT finish the current step, save ``last.pt`` and raise :class:`TrainingStopped` (a
    second signal acts at once); a non-finite loss raises :class:`TrainingStopped` without saving over the last
    good ``last.pt`` (``solver.skip_nonfinite`` = N skips up to N such steps instead, with a warning each); any
    other exception (a data error, a bug) saves ``last.pt`` before propagating.
    """
    out_dir, solver = Path(out_dir), _resolve_schedule(cfg.solver, len(train_loader))
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    optimizer = build_optimizer(model, solver)
    state = {"it": 0, "spent": 0.0, "best": -1.0, "skipped": [], "nonfinite": 0, "epoch": 0, "batch": 0}
    scaler = torch.amp.GradScaler(device.type, enabled=solver.amp and device.type == "cuda")
    last = out_dir / "weights" / "last.pt"
    if resume and is_main_process():  # temporary files of saves a kill -9 interrupted
        for stale in last.parent.glob("*.pt.*.tmp"):
            stale.unlink(missing_ok=True)
    if resume and last.is_file():
        ckpt = load_checkpoint(last)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.update(it=int(ckpt["iteration"]), spent=float(ckpt["elapsed_s"]), best=float(ckpt["best"]))
        state.update(skipped=list(ckpt.get("skipped_images", [])), nonfinite=int(ckpt.get("nonfinite_steps", 0)))
        state.update(epoch=int(ckpt.get("epoch", 0)), batch=int(ckpt.get("epoch_batch", 0)))
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if is_main_process():
            print(f"resumed from {last} at iteration {state['it']}")
    ddp = model
    if is_dist():
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    budget = solver.max_minutes * 60.0
    t0 = time.perf_counter() - state["spent"]
    log = RunLog(out_dir, budget, solver.max_iter, state)

    def save(path: Path) -> None:
        if is_main_process():
            save_checkpoint(path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "iteration": state["it"],
                "elapsed_s": time.perf_counter() - t0, "best": state["best"], "config": to_dict(cfg),
                "skipped_images": state["skipped"], "nonfinite_steps": state["nonfinite"], "epoch": state["epoch"],
                "epoch_batch": state["batch"], "rng": rng_state(), **(extra_state or {}),
            })  # fmt: skip

    def evaluate() -> dict:
        lr = optimizer.param_groups[0]["lr"]
        metrics = _evaluate(model, evaluate_fn, log, state, lr, time.perf_counter() - t0)
        ap = metrics.get("bbox", {}).get("AP", -1.0) if metrics else -1.0
        if ap > state["best"]:
            state["best"] = ap
            save(out_dir / "weights" / "best.pt")
        model.train()
        return metrics

    data, metrics = infinite(train_loader, state["epoch"], state["batch"]), {}
    model.train()
    stop = _StopSignals()
    try:
        while budget > 0 or state["it"] < solver.max_iter:  # a time budget alone ends a budgeted run
            it, progress = state["it"], state["it"]
            if budget > 0:
                elapsed = time.perf_counter() - t0
                elapsed = float(reduce_mean(torch.tensor(elapsed))) if is_dist() else elapsed  # ranks agree
                if elapsed >= budget:
                    break
                progress = elapsed / budget * solver.max_iter
            for g in optimizer.param_groups:
                g["lr"] = solver.base_lr * lr_factor(it, progress, solver)
            state["epoch"], state["batch"], (images, targets) = next(data)
            if it < 3 and is_main_process() and class_names is not None:  # what the model is trained on
                save_train_batch(images, targets, class_names, out_dir / f"train_batch{it}.jpg")
            for t in targets:
                for msg in t.pop("skipped", ()):
                    if msg not in state["skipped"]:  # once per file, however often it comes round
                        state["skipped"].append(msg)
                        log.warn(f"warning: skipped an unreadable training image: {msg}")
            tic = time.perf_counter()
            try:
                losses = train_step(ddp, optimizer, scaler, images, targets, solver, device, it)
            except NonFiniteLoss as e:
                if state["nonfinite"] >= solver.skip_nonfinite:
                    raise
                state["nonfinite"] += 1
                state["it"] = it + 1
                n, allowed = state["nonfinite"], solver.skip_nonfinite
                log.warn(f"warning: {e}; step skipped ({n} of solver.skip_nonfinite={allowed})")
                continue
            state["it"] = it + 1
            if is_dist():  # the logged losses are the mean over processes (as detectron2 logs them)
                losses = dict(zip(losses, reduce_mean(torch.stack(list(losses.values())))))
            ips = len(images) * get_world_size() / max(time.perf_counter() - tic, 1e-9)
            log.step(state["it"], time.perf_counter() - t0, optimizer.param_groups[0]["lr"], losses, ips)
            if solver.checkpoint_period and state["it"] % solver.checkpoint_period == 0:
                save(last)
            if evaluate_fn is not None and solver.eval_period and state["it"] % solver.eval_period == 0:
                metrics = evaluate() if budget > 0 or state["it"] < solver.max_iter else metrics
            signum = stop.received()
            if signum:
                save(last)
                name = signal.Signals(signum).name
                raise TrainingStopped(
                    f"stopped by {name} at iteration {state['it']}: saved {last}; continue with --resume", 128 + signum
                )
    except TrainingStopped:
        log.close()
        raise
    except NonFiniteLoss as e:
        log.close()
        kept = f"{last} keeps the last checkpoint" if last.is_file() else "no checkpoint was written before it"
        raise TrainingStopped(f"stopped: {e}; {kept} (solver.skip_nonfinite=N skips such steps)", 1) from None
    except BaseException:
        log.close()
        save(last)
        if is_main_process():
            print(f"\ntraining stopped at iteration {state['it']}; saved {last}")
        raise
    finally:
        stop.restore()
    log.bar.close()
    save(last)
    if evaluate_fn is not None:
        metrics = evaluate()
    log.close()
    if state["skipped"]:
        metrics = {**metrics, "skipped_images": state["skipped"]}
        if is_main_process():
            print(f"{len(state['skipped'])} unreadable training image(s) skipped (listed in metrics.json)")
    return metrics


class _StopSignals:
    """SIGTERM / SIGINT noted instead of acted on, so the loop can finish its step and save; the handlers are put
    back after the first one (a second signal acts at once) and when training ends. Every process stops at the same
    iteration (the flag is max-reduced)."""

    def __init__(self) -> None:
        self.signum = 0
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._note)

    def _note(self, signum: int, frame) -> None:
        self.signum = signum
        signal.signal(signum, self.previous.get(signum, signal.SIG_DFL))

    def received(self) -> int:
        return int(_agree(self.signum, "max"))

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


def _evaluate(model: nn.Module, evaluate_fn, log: RunLog, state: dict, lr: float, elapsed: float) -> dict:
    model.eval()
    metrics = evaluate_fn(model)
    if metrics:
        log.evaluation(state["it"], state["epoch"], lr, elapsed, metrics)
    return metrics
