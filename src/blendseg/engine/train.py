"""The training loop: optimiser, warmup + multi-step LR, AMP, clipping, DDP, time budget, checkpoints, eval.

A plain function (``fit``) over plain parts; the model computes its own losses in ``forward`` (so DDP sees
every parameter that takes part in a loss).
"""

from __future__ import annotations

import bisect
import contextlib
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

from ..config import ConfigError, SolverConfig, TrainConfig, to_dict
from ..dist import (
    agree,
    broadcast_object,
    gather_objects,
    get_rank,
    get_world_size,
    is_dist,
    is_main_process,
    reduce_host,
)
from ..errors import DataError
from ..inference.precision import missing_instructions
from .checkpoint import load_checkpoint, save_checkpoint
from .memory import estimate_memory
from .runlog import RunLog, save_train_batch
from .watch import LearningWatch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # what schedulers (SLURM, Kubernetes) and Ctrl-C send


class TrainingStopped(RuntimeError):
    """Training ended early on purpose (a stop signal, a non-finite loss): a one-line ``message`` and the process
    ``exit_code`` for the command line; what was saved is said in the message."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NonFiniteLoss(FloatingPointError):
    """A loss term became NaN or inf; ``terms`` names them (``values``: the step's losses, mean over processes)."""

    def __init__(self, it: int, values: dict[str, float]) -> None:
        self.terms = [k for k, v in values.items() if not math.isfinite(v) and k != "loss"] or ["loss"]
        others = ", ".join(f"{k}={v:.4g}" for k, v in values.items() if k not in self.terms and k != "loss")
        super().__init__(
            f"the loss became non-finite at iteration {it}: "
            + ", ".join(f"{k}={values.get(k)}" for k in self.terms)
            + (f" (others: {others})" if others else "")
        )


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
        i = start - 1
        for i, batch in enumerate(loader, start):
            yield epoch, i + 1, batch
        if i < 0:  # not one batch in a whole epoch: the loop would spin here for ever
            raise DataError(_no_batch_message(loader))
        epoch, start = epoch + 1, 0


def _no_batch_message(loader) -> str:
    dataset = getattr(loader, "dataset", None)
    images = f"{len(dataset)} training images" if dataset is not None else "the training images"
    size = getattr(getattr(getattr(loader, "batch_sampler", None), "batch_sampler", None), "batch_size", None)
    batch = f"batches of {size} per process" if size else "full batches"
    return (
        f"an epoch of the training data gives no batch: {images} (those with annotations) for {batch}, and "
        "incomplete batches are dropped (so are leftovers of each aspect-ratio group); lower solver.ims_per_batch, "
        "set data.aspect_ratio_grouping=false, or add images"
    )


def rng_state(device: torch.device) -> dict:
    """This process's random generators: torch's CPU one, Python's and, training on a GPU, that GPU's (the data
    workers' randomness is a function of the sample, data/loader.py)."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda" and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def restore_rng(saved: list[dict], device: torch.device) -> None:
    """Each rank takes back its own generators from a checkpoint's ``rng`` (one state per rank, in rank order). A
    rank without one (the process count changed, or the checkpoint was written by rank 0 alone when an error stopped
    training) keeps its fresh seed (seed + rank) and says so."""
    rank = get_rank()
    if rank < len(saved):
        set_rng_state(saved[rank], device)
    else:
        print(f"warning: rank {rank}: the checkpoint holds {len(saved)} RNG state(s); this rank keeps its seed")


def prepare_model(model: nn.Module, solver: SolverConfig, device: torch.device) -> nn.Module:
    """``model`` on ``device``, in channels-last memory format under ``solver.channels_last`` (in place)."""
    model.to(device)
    if solver.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    batches: list[tuple[object, list[dict]]], solver: SolverConfig, device: torch.device, it: int,
) -> dict[str, float]:  # fmt: skip
    """One optimisation step of ``model`` (possibly DDP-wrapped) over ``batches``: one (images, targets) batch, or
    ``solver.accumulate`` micro-batches whose gradients add up (each loss divided by their number; DDP all-reduces
    once, after the last). Returns the losses (their mean over micro-batches and processes), read on the host once
    (:func:`step_values`) after the backward passes are queued. A non-finite loss raises :class:`NonFiniteLoss`
    before the optimiser moves (every process sees it: the values are reduced)."""
    fmt = torch.channels_last if solver.channels_last else torch.preserve_format
    optimizer.zero_grad(set_to_none=True)
    total: dict[str, Tensor] = {}
    for k, (images, targets) in enumerate(batches):
        last = k == len(batches) - 1
        with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            with amp_context(solver, device):
                out = model(images.to(device, memory_format=fmt), targets)
            loss = sum(out.losses.values())
            scaler.scale(loss / len(batches)).backward()
        for name, v in {"loss": loss, **out.losses}.items():  # the mean over micro-batches
            total[name] = total.get(name, 0) + v.detach() / len(batches)
    values = step_values(total)
    if not all(math.isfinite(v) for v in values.values()):
        raise NonFiniteLoss(it, values)
    if solver.clip_grad_norm > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), solver.clip_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    return values


def step_values(losses: dict[str, Tensor]) -> dict[str, float]:
    """The step's losses as Python numbers, the mean over processes (as detectron2 logs them): one copy to the host
    (the step's one wait for the device) and one all-reduce of host numbers (:func:`~blendseg.dist.reduce_host`).
    A non-finite value on any process makes the mean non-finite on all of them."""
    host = torch.stack([v.detach().float().reshape(()) for v in losses.values()]).tolist()
    return dict(zip(losses, reduce_host(host, "mean")))


def amp_dtype(
    solver: SolverConfig, device: torch.device, flags: frozenset[str] | None = None
) -> torch.dtype | None:  # fmt: skip
    """The autocast dtype of ``solver.amp`` on ``device`` (None: no autocast): ``amp_dtype`` auto is fp16 on CUDA
    and bf16 elsewhere; fp16 needs CUDA. bf16 on a CPU without the instructions for it (``flags``: this CPU's,
    :func:`~blendseg.inference.precision.cpu_flags`) is None: emulated bf16 trains slower than fp32 (:func:`fit`
    warns once)."""
    if not solver.amp:
        return None
    names = {"fp16": torch.float16, "bf16": torch.bfloat16}
    name = solver.amp_dtype if solver.amp_dtype != "auto" else ("fp16" if device.type == "cuda" else "bf16")
    if name not in names:
        raise ValueError(f"solver.amp_dtype must be auto, fp16 or bf16, got {solver.amp_dtype!r}")
    if name == "fp16" and device.type != "cuda":
        raise ValueError(f"solver.amp_dtype=fp16 needs a CUDA device (training on {device}); use bf16")
    if device.type == "cpu" and missing_instructions(name, flags):
        return None
    return names[name]


def amp_context(solver: SolverConfig, device: torch.device):
    dtype = amp_dtype(solver, device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def selection_metric(metrics: dict) -> tuple[str, float] | None:
    """What chooses best.pt and stops early: ("panoptic/PQ", value) for panoptic evaluations, else "segm/AP" (mask
    methods), else "bbox/AP" (FCOS); None without an evaluation."""
    for section, key in (("panoptic", "PQ"), ("segm", "AP"), ("bbox", "AP")):
        values = metrics.get(section)
        if isinstance(values, dict) and key in values:
            return f"{section}/{key}", float(values[key])
    return None


def scale_to_batch(solver: SolverConfig, batch: int) -> SolverConfig:
    """``solver`` for a step batch of ``batch`` images where it was meant for ``solver.reference_batch``: base_lr
    times k = batch / reference (SGD: the linear scaling rule of Goyal et al. 2017, as detectron2's
    REFERENCE_WORLD_SIZE) or sqrt(k) (AdamW: the square-root rule of Malladi et al. 2022); without ``epochs`` the
    iteration counts (max_iter, steps, warmup, checkpoint and eval periods) divided by k, so the run sees as many
    images. Unchanged when the batches agree or ``reference_batch`` is 0; the keys in ``solver.as_given`` (the
    overrides a user typed) are never changed."""
    ref = solver.reference_batch
    if ref <= 0 or batch == ref:
        return solver
    k = batch / ref
    keep = set(solver.as_given)
    lr = solver.base_lr * (k if solver.optimizer == "sgd" else math.sqrt(k))
    scaled: dict = {"reference_batch": batch, "base_lr": lr}
    if solver.epochs <= 0:
        n = lambda x: max(1, round(x / k)) if x > 0 else x  # noqa: E731
        scaled.update(max_iter=n(solver.max_iter), steps=tuple(n(s) for s in solver.steps),
                      warmup_iters=n(solver.warmup_iters), checkpoint_period=n(solver.checkpoint_period),
                      eval_period=n(solver.eval_period))  # fmt: skip
    return dataclasses.replace(solver, **{key: v for key, v in scaled.items() if key not in keep})


def step_batch(solver: SolverConfig, world_size: int) -> tuple[int, int]:
    """(the step's batch over all processes, each process's share): ``ims_per_batch`` shared out, or
    ``ims_per_process`` each when set."""
    if solver.ims_per_process > 0:
        return solver.ims_per_process * world_size, solver.ims_per_process
    if solver.ims_per_batch % world_size:
        raise ConfigError(
            f"solver.ims_per_batch={solver.ims_per_batch} (the batch over all processes) does not divide among "
            f"{world_size} processes: give a multiple of {world_size}, or solver.ims_per_process for each one's"
        )
    return solver.ims_per_batch, solver.ims_per_batch // world_size


def micro_batch(solver: SolverConfig, world_size: int) -> int:
    """Images a process puts through the model at once: its share of the step (:func:`step_batch`) over
    ``solver.accumulate`` micro-batches."""
    share = step_batch(solver, world_size)[1]
    if solver.accumulate < 1 or share % solver.accumulate:
        raise ConfigError(
            f"solver.accumulate={solver.accumulate} must be >= 1 and divide each process's {share} images a step "
            f"(solver.ims_per_batch={solver.ims_per_batch} over {world_size} process(es))"
        )
    return share // solver.accumulate


def _resolve_schedule(solver: SolverConfig, iters_per_epoch: int) -> SolverConfig:
    """With ``epochs`` > 0, max_iter = epochs x loader length; steps and warmup keep their fractions of it (a
    fine-tuning run of 150 iterations warms up for 5% of them, as the 3000-iteration recipe does, not for 100)."""
    if solver.epochs <= 0:
        return solver
    max_iter = solver.epochs * iters_per_epoch
    frac = lambda x: round(x / solver.max_iter * max_iter)  # noqa: E731
    warmup = max(1, frac(solver.warmup_iters)) if solver.warmup_iters > 0 else 0
    return dataclasses.replace(solver, steps=tuple(frac(s) for s in solver.steps), max_iter=max_iter,
                               warmup_iters=warmup)  # fmt: skip


def resolve_solver(solver: SolverConfig, iters_per_epoch: int, world_size: int) -> SolverConfig:
    """The schedule a run follows: :func:`scale_to_batch` for the step batch (:func:`step_batch`), then
    :func:`_resolve_schedule` for ``epochs``; the changes are printed."""
    batch, share = step_batch(solver, world_size)
    resolved = _resolve_schedule(scale_to_batch(solver, batch), iters_per_epoch)
    if is_main_process():
        show = lambda v: f"{v:.6g}" if isinstance(v, float) else str(v)  # noqa: E731
        before, after = dataclasses.asdict(solver), dataclasses.asdict(resolved)
        changed = [
            f"{k} {show(v)} -> {show(after[k])}" for k, v in before.items() if after[k] != v and k != "reference_batch"
        ]
        if changed:
            why = f"a step batch of {batch} ({world_size} x {share})"
            why += f" for {solver.reference_batch}" if solver.reference_batch else ""
            why += f", {solver.epochs} epochs of {iters_per_epoch} iterations" if solver.epochs > 0 else ""
            print(f"solver for {why}: " + ", ".join(changed), flush=True)
    return resolved


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
    skipped), with ``best``: the metric that chose ``best.pt`` (:func:`selection_metric`), its value and
    iteration. ``solver.patience`` = N > 0 stops once N evaluations in a row (every ``eval_period``) did not
    improve it (``early_stop`` in the metrics).

    Faults: SIGTERM / SIGINT finish the current step, save ``last.pt`` and raise :class:`TrainingStopped` (a
    second signal acts at once); a non-finite loss raises :class:`TrainingStopped` without saving over the last
    good ``last.pt`` (``solver.skip_nonfinite`` = N skips up to N such steps instead, with a warning each); any
    other exception (a data error, a bug) saves ``last.pt`` before propagating.
    """
    steps_per_epoch = len(train_loader) // max(cfg.solver.accumulate, 1)  # the loader's batches are micro-batches
    out_dir, solver = Path(out_dir), resolve_solver(cfg.solver, steps_per_epoch, get_world_size())
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
    model = prepare_model(model, solver, device)
    estimate = estimate_memory(model, cfg, device, lambda: amp_context(solver, device))  # CUDA only
    if estimate is not None and is_main_process():
        print(estimate.message(step_batch(solver, get_world_size())[1], solver.accumulate), flush=True)
    optimizer = build_optimizer(model, solver)
    state = {"it": 0, "spent": 0.0, "best": -1.0, "skipped": [], "nonfinite": 0, "epoch": 0, "batch": 0,
             "best_metric": "", "best_it": 0, "stale": 0}  # fmt: skip
    dtype = amp_dtype(solver, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16 only
    if solver.amp and dtype is None and is_main_process():
        print(
            f"warning: solver.amp: {missing_instructions('bf16')}; bf16 autocast would run emulated, slower "
            "than fp32: training in fp32"
        )
    last = out_dir / "weights" / "last.pt"
    if resume and is_main_process():  # temporary files of saves a kill -9 interrupted
        for stale in last.parent.glob("*.pt.*.tmp"):
            stale.unlink(missing_ok=True)
    # rank 0 reads the checkpoint and every rank gets its contents: a node without the run folder on its disk
    # resumes where the others do (its own generators from the per-rank list)
    ckpt = broadcast_object(load_checkpoint(last) if is_main_process() and last.is_file() else None) if resume else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.update(it=int(ckpt["iteration"]), spent=float(ckpt["elapsed_s"]), best=float(ckpt["best"]))
        state.update(skipped=list(ckpt.get("skipped_images", [])), nonfinite=int(ckpt.get("nonfinite_steps", 0)))
        places = ckpt["data_places"]
        epoch, batch = places[get_rank()] if get_rank() < len(places) else places[0]  # each rank its own place
        state.update(epoch=int(epoch), batch=int(batch))
        state.update(best_metric=str(ckpt.get("best_metric", "")), best_it=int(ckpt.get("best_iteration", 0)))
        state.update(stale=int(ckpt.get("stale_evaluations", 0)))
        if "rng" in ckpt:
            restore_rng(ckpt["rng"], device)
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if is_main_process():
            print(f"resumed from {last} at iteration {state['it']}")
    ddp = model
    if is_dist():
        ddp = nn.parallel.DistributedDataParallel(  # buffers not re-sent each forward (detectron2's choice)
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
    budget = solver.max_minutes * 60.0
    t0 = time.perf_counter() - state["spent"]
    log = RunLog(out_dir, budget, solver.max_iter, state, tensorboard=cfg.log.tensorboard)

    def weights() -> dict[str, Tensor]:
        """The model's tensors in the standard (contiguous) layout whatever the training's memory format, so that
        a checkpoint reads the same everywhere (safetensors refuses channels-last strides)."""
        return {k: v.contiguous() for k, v in model.state_dict().items()}

    def save(path: Path, every_rank: bool = False) -> None:
        """``every_rank``: called by all ranks together, so the checkpoint gets each one's generators and place in
        its data (:func:`gather_objects`: with aspect-ratio grouping each rank's epochs have their own length);
        otherwise this process's alone (rank 0 saving best.pt, an error on one)."""
        mine = (rng_state(device), [state["epoch"], state["batch"]])
        ranks = gather_objects(mine) if every_rank else [mine]
        rng, places = [r for r, _ in ranks], [p for _, p in ranks]
        if is_main_process():
            save_checkpoint(path, {
                "model": weights(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "iteration": state["it"],
                "elapsed_s": time.perf_counter() - t0, "best": state["best"], "config": to_dict(cfg),
                "skipped_images": state["skipped"], "nonfinite_steps": state["nonfinite"], "epoch": state["epoch"],
                "epoch_batch": state["batch"], "rng": rng, "data_places": places, "best_metric": state["best_metric"],
                "best_iteration": state["best_it"], "stale_evaluations": state["stale"], **(extra_state or {}),
            })  # fmt: skip

    def evaluate() -> dict:
        """Evaluate; on the main process keep best.pt by :func:`selection_metric` and count the evaluations since
        it improved; the metrics get a ``best`` entry (metric, value, iteration)."""
        lr = optimizer.param_groups[0]["lr"]
        metrics = _evaluate(model, evaluate_fn, log, state, lr, time.perf_counter() - t0)
        model.train()
        chosen = selection_metric(metrics) if metrics else None
        if chosen is None:
            return metrics
        name, value = chosen
        if value > state["best"]:
            state.update(best=value, best_metric=name, best_it=state["it"], stale=0)
            save(out_dir / "weights" / "best.pt")
        else:
            state["stale"] += 1
        best = {"metric": state["best_metric"], "value": state["best"], "iteration": state["best_it"]}
        return {**metrics, "best": best}

    def patience_spent() -> bool:
        """Every rank: has the main process seen ``solver.patience`` evaluations without improvement?"""
        return bool(solver.patience) and bool(agree(float(state["stale"] >= solver.patience), "max"))

    data, metrics, early = infinite(train_loader, state["epoch"], state["batch"]), {}, False
    watch = LearningWatch(solver.warmup_iters)
    model.train()
    stop = _StopSignals()
    try:
        while budget > 0 or state["it"] < solver.max_iter:  # a time budget alone ends a budgeted run
            it, progress = state["it"], state["it"]
            if budget > 0:
                elapsed = agree(time.perf_counter() - t0, "mean")  # ranks agree
                if elapsed >= budget:
                    break
                progress = elapsed / budget * solver.max_iter
            for g in optimizer.param_groups:
                g["lr"] = solver.base_lr * lr_factor(it, progress, solver)
            batches = []
            for _ in range(solver.accumulate):
                state["epoch"], state["batch"], batch = next(data)
                batches.append(batch)
            images, targets = batches[0][0], [t for _, tg in batches for t in tg]
            if it < 3 and is_main_process() and class_names is not None:  # what the model is trained on
                save_train_batch(images, batches[0][1], class_names, out_dir / f"train_batch{it}.jpg")
                log.image(f"train_batch/{it}", out_dir / f"train_batch{it}.jpg", it)
            for t in targets:
                for msg in t.pop("skipped", ()):
                    if msg not in state["skipped"]:  # once per file, however often it comes round
                        state["skipped"].append(msg)
                        log.warn(f"warning: skipped an unreadable training image: {msg}")
            tic = time.perf_counter()
            try:
                losses = train_step(ddp, optimizer, scaler, batches, solver, device, it)
            except NonFiniteLoss as e:
                if state["nonfinite"] >= solver.skip_nonfinite:
                    raise
                state["nonfinite"] += 1
                state["it"] = it + 1
                n, allowed = state["nonfinite"], solver.skip_nonfinite
                log.warn(f"warning: {e}; step skipped ({n} of solver.skip_nonfinite={allowed})")
                continue
            state["it"] = it + 1
            if is_main_process():
                for msg in watch.step(it, sum(len(t["boxes"]) for t in targets), losses["loss"]):
                    log.warn(msg)
            ips = len(targets) * get_world_size() / max(time.perf_counter() - tic, 1e-9)
            log.step(state["it"], time.perf_counter() - t0, optimizer.param_groups[0]["lr"], losses, ips)
            if solver.checkpoint_period and state["it"] % solver.checkpoint_period == 0:
                save(last, every_rank=True)
            if evaluate_fn is not None and solver.eval_period and state["it"] % solver.eval_period == 0:
                metrics = evaluate() if budget > 0 or state["it"] < solver.max_iter else metrics
                if patience_spent():
                    early = True
                    if is_main_process():
                        log.info(
                            f"early stop at iteration {state['it']}: {state['best_metric']} has not improved for "
                            f"{solver.patience} evaluations (solver.patience); best {state['best']:.2f} at "
                            f"iteration {state['best_it']}, kept in weights/best.pt"
                        )
                    break
            signum = stop.received()
            if signum:
                save(last, every_rank=True)
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
    save(last, every_rank=True)
    if evaluate_fn is not None and not early:  # an early stop has just evaluated these weights
        metrics = evaluate()
    if early:
        metrics = {**metrics, "early_stop": {"iteration": state["it"], "patience": solver.patience}}
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
        return int(agree(self.signum, "max"))

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
