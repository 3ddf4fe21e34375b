"""The training step and what it runs under: optimiser, warmup + multi-step LR, AMP, gradient accumulation and
clipping, the batch and schedule rules, the random generators. The loop around it is :mod:`~blendseg.engine.fit`.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import math
import random

import torch
from torch import Tensor, nn

from ..config import ConfigError, SolverConfig
from ..dist import (
    get_rank,
    is_main_process,
    reduce_host,
)
from ..inference.precision import missing_instructions


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
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    batches: list[tuple[object, list[dict]]],
    solver: SolverConfig,
    device: torch.device,
    it: int,
) -> dict[str, float]:
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


def amp_dtype(solver: SolverConfig, device: torch.device, flags: frozenset[str] | None = None) -> torch.dtype | None:
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
        scaled.update(
            max_iter=n(solver.max_iter),
            steps=tuple(n(s) for s in solver.steps),
            warmup_iters=n(solver.warmup_iters),
            checkpoint_period=n(solver.checkpoint_period),
            eval_period=n(solver.eval_period),
        )
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
    return dataclasses.replace(
        solver, steps=tuple(frac(s) for s in solver.steps), max_iter=max_iter, warmup_iters=warmup
    )


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
