"""The training loop: optimiser, warmup + multi-step LR, AMP, clipping, DDP, time budget, checkpoints, eval.

A plain function (``fit``) over plain parts; the model computes its own losses in ``forward`` (so DDP sees
every parameter that takes part in a loss).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..config import SolverConfig, TrainConfig, to_dict
from .checkpoint import load_checkpoint, save_checkpoint
from .dist import get_world_size, is_dist, is_main_process, reduce_mean

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
    if not torch.isfinite(loss):
        values = {k: float(v) for k, v in out.losses.items()}
        raise FloatingPointError(f"loss became {float(loss)} at iteration {it}: {values}")
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
    Returns the last evaluation metrics (or {}). Any exception (non-finite loss,
    Ctrl-C, a data error) saves ``last.pt`` before propagating.
    """
    out_dir, solver = Path(out_dir), _resolve_schedule(cfg.solver, len(train_loader))
    model.to(device)
    optimizer = build_optimizer(model, solver)
    state = {"it": 0, "spent": 0.0, "best": -1.0}
    last = out_dir / "weights" / "last.pt"
    if resume and last.is_file():
        ckpt = load_checkpoint(last)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state = {"it": int(ckpt["iteration"]), "spent": float(ckpt["elapsed_s"]), "best": float(ckpt["best"])}
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
                **(extra_state or {}),
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
            tic = time.perf_counter()
            losses = train_step(ddp, optimizer, scaler, images, targets, solver, device, it)
            state["it"] = it + 1
            ips = len(images) * get_world_size() / max(time.perf_counter() - tic, 1e-9)
            log.step(state["it"], time.perf_counter() - t0, optimizer.param_groups[0]["lr"], losses, ips)
            if solver.checkpoint_period and state["it"] % solver.checkpoint_period == 0:
                save(last)
            if evaluate_fn is not None and solver.eval_period and state["it"] % solver.eval_period == 0:
                metrics = evaluate() if budget > 0 or state["it"] < solver.max_iter else metrics
    except BaseException:
        log.close()
        save(last)
        if is_main_process():
            print(f"\ntraining stopped at iteration {state['it']}; saved {last}")
        raise
    log.bar.close()
    save(last)
    if evaluate_fn is not None:
        metrics = evaluate()
    log.close()
    return metrics


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
