"""The training loop: optimiser, warmup + multi-step LR, AMP, clipping, DDP, time budget, checkpoints, eval.

A plain function (``fit``) over plain parts; the model computes its own losses in ``forward`` (so DDP sees
every parameter that takes part in a loss).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..config import SolverConfig, TrainConfig, to_dict
from .checkpoint import load_checkpoint, save_checkpoint
from .dist import get_world_size, is_dist, is_main_process, reduce_mean

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
        values = {k: float(v) for k, v in losses.items()}
        self.terms = [k for k, v in values.items() if not torch.isfinite(torch.tensor(v))] or ["(another process)"]
        others = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k not in self.terms)
        super().__init__(
            f"the loss became non-finite at iteration {it}: "
            + ", ".join(f"{k}={values.get(k)}" for k in self.terms)
            + (f" (others: {others})" if others else "")
        )


def _all_true(flag: bool) -> bool:
    """``flag`` and-ed over processes (every rank takes the same branch)."""
    if not is_dist():
        return flag
    t = torch.tensor(float(flag))
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
    return bool(t > 0)


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


def infinite(loader) -> Iterator:
    epoch = 0
    while True:
        for sampler in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, images, targets: list[dict],
    solver: SolverConfig, device: torch.device, it: int,
) -> dict[str, Tensor]:  # fmt: skip
    """One optimisation step of ``model`` (possibly DDP-wrapped); returns the detached losses."""
    with torch.autocast(device.type, enabled=solver.amp):
        out = model(images.to(device), targets)
    loss = sum(out.losses.values())
    if not _all_true(bool(torch.isfinite(loss))):  # before backward, so no process is left waiting in it
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
) -> dict:
    """Train ``model`` per ``cfg.solver``; writes ``weights/last.pt`` (and ``best.pt``) and ``train_log.jsonl``.

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
    model.to(device)
    optimizer = build_optimizer(model, solver)
    state = {"it": 0, "spent": 0.0, "best": -1.0, "skipped": [], "nonfinite": 0}
    last = out_dir / "weights" / "last.pt"
    if resume and last.is_file():
        ckpt = load_checkpoint(last)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.update(it=int(ckpt["iteration"]), spent=float(ckpt["elapsed_s"]), best=float(ckpt["best"]))
        state.update(skipped=list(ckpt.get("skipped_images", [])), nonfinite=int(ckpt.get("nonfinite_steps", 0)))
        if is_main_process():
            print(f"resumed from {last} at iteration {state['it']}")
    ddp = model
    if is_dist():
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(device.type, enabled=solver.amp and device.type == "cuda")
    budget = solver.max_minutes * 60.0
    t0 = time.perf_counter() - state["spent"]
    log = _RunLog(out_dir, budget, solver.max_iter, state)

    def save(path: Path) -> None:
        if is_main_process():
            save_checkpoint(path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": state["it"],
                "elapsed_s": time.perf_counter() - t0, "best": state["best"], "config": to_dict(cfg),
                "skipped_images": state["skipped"], "nonfinite_steps": state["nonfinite"], **(extra_state or {}),
            })  # fmt: skip

    def evaluate() -> dict:
        metrics = _evaluate(model, evaluate_fn, log, state["it"], time.perf_counter() - t0)
        ap = metrics.get("bbox", {}).get("AP", -1.0) if metrics else -1.0
        if ap > state["best"]:
            state["best"] = ap
            save(out_dir / "weights" / "best.pt")
        model.train()
        return metrics

    data, metrics = infinite(train_loader), {}
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
            images, targets = next(data)
            for t in targets:
                for msg in t.pop("skipped", ()):
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
        if not is_dist():
            return self.signum
        t = torch.tensor(float(self.signum))
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return int(t)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


class _RunLog:
    """Progress bar (iterations, or seconds under a time budget) and ``train_log.jsonl`` on the main process."""

    def __init__(self, out_dir: Path, budget: float, max_iter: int, state: dict) -> None:
        self.main = is_main_process()
        self.budget = budget
        self.file = open(out_dir / "train_log.jsonl", "a") if self.main else None  # noqa: SIM115
        total, start = (int(budget), int(state["spent"])) if budget > 0 else (max_iter, state["it"])
        self.bar = tqdm(
            total=total, initial=start, unit="s" if budget > 0 else "it", disable=not self.main,
            dynamic_ncols=True, mininterval=2,
        )  # fmt: skip

    def step(self, it: int, elapsed: float, lr: float, losses: dict[str, Tensor], ips: float) -> None:
        if not self.main:
            return
        values = {k: round(float(v), 4) for k, v in losses.items()}
        self.bar.set_postfix(it=it, loss=f"{values['loss']:.3f}", lr=f"{lr:.2e}", ips=f"{ips:.1f}")
        self.bar.update(1 if self.budget <= 0 else max(0, min(int(elapsed), self.bar.total) - self.bar.n))
        if it % 20 == 0 or it == 1:
            self.write({"iteration": it, "time_s": round(elapsed, 1), "lr": lr, **values})

    def warn(self, msg: str) -> None:
        if self.main:
            tqdm.write(msg)
            self.write({"warning": msg})

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()
            self.file = None


def _evaluate(model: nn.Module, evaluate_fn, log: _RunLog, it: int, elapsed: float) -> dict:
    model.eval()
    metrics = evaluate_fn(model)
    if metrics:
        log.write({"iteration": it, "time_s": round(elapsed, 1), "eval": metrics})
    return metrics
