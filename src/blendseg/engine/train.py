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
from torch import nn
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
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


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

    Returns the last evaluation metrics (or {}). Any exception saves ``last.pt`` before propagating.
    """
    out_dir = Path(out_dir)
    solver = cfg.solver
    max_iter = solver.epochs * len(train_loader) if solver.epochs > 0 else solver.max_iter
    if solver.epochs > 0:  # steps are fractions of the preset's schedule
        steps = tuple(round(s / solver.max_iter * max_iter) for s in solver.steps)
        solver = dataclasses.replace(solver, steps=steps, max_iter=max_iter)
    model.to(device)
    optimizer = build_optimizer(model, solver)
    start_iter, spent = 0, 0.0
    best = -1.0
    if resume and (out_dir / "weights" / "last.pt").is_file():
        ckpt = load_checkpoint(out_dir / "weights" / "last.pt")
        model.load_state_dict(ckpt["model"])
        if "optimizer" in ckpt:
            optimizer.load_state_dict(ckpt["optimizer"])
        start_iter, spent, best = (
            int(ckpt["iteration"]),
            float(ckpt.get("elapsed_s", 0.0)),
            float(ckpt.get("best", -1)),
        )
        if is_main_process():
            print(f"resumed from {out_dir / 'weights' / 'last.pt'} at iteration {start_iter}")
    ddp_model = model
    if is_dist():
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    scaler = torch.amp.GradScaler(device.type, enabled=solver.amp and device.type == "cuda")
    budget = solver.max_minutes * 60.0
    t0 = time.perf_counter() - spent
    it = start_iter
    metrics: dict = {}
    log = open(out_dir / "train_log.jsonl", "a") if is_main_process() else None  # noqa: SIM115

    def payload() -> dict:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "iteration": it,
            "elapsed_s": time.perf_counter() - t0, "best": best, "config": to_dict(cfg), **(extra_state or {}),
        }  # fmt: skip

    # under a time budget the bar counts seconds (its ETA is the budget's), otherwise iterations
    bar_total, bar_start = (int(budget), int(spent)) if budget > 0 else (max_iter, start_iter)
    unit = "s" if budget > 0 else "it"
    bar = tqdm(
        total=bar_total, initial=bar_start, unit=unit, disable=not is_main_process(), dynamic_ncols=True, mininterval=2
    )
    data = infinite(train_loader)
    model.train()
    try:
        while it < max_iter:
            progress = it
            if budget > 0:
                elapsed = torch.tensor(time.perf_counter() - t0)
                elapsed = float(reduce_mean(elapsed)) if is_dist() else float(elapsed)
                progress = max(it, elapsed / budget * max_iter)
                if elapsed >= budget:
                    break
            for g in optimizer.param_groups:
                g["lr"] = solver.base_lr * lr_factor(it, progress, solver)
            images, targets = next(data)
            tic = time.perf_counter()
            with torch.autocast(device.type, enabled=solver.amp):
                out = ddp_model(images.to(device), targets)
            loss = sum(out.losses.values())
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss.item()} at iteration {it}: { {k: float(v) for k, v in out.losses.items()} }"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if solver.clip_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), solver.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            it += 1
            if is_main_process():
                losses = {k: round(float(v.detach()), 4) for k, v in out.losses.items()}
                ips = len(images) * get_world_size() / max(time.perf_counter() - tic, 1e-9)
                bar.set_postfix(
                    it=it,
                    loss=f"{float(loss.detach()):.3f}",
                    lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                    ips=f"{ips:.1f}",
                )
                bar.update(1 if budget <= 0 else max(0, min(int(time.perf_counter() - t0), bar_total) - bar.n))
                if it % 20 == 0 or it == 1:
                    rec = {
                        "iteration": it,
                        "time_s": round(time.perf_counter() - t0, 1),
                        "lr": optimizer.param_groups[0]["lr"],
                        "loss": round(float(loss.detach()), 4),
                        **losses,
                    }
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
            if solver.checkpoint_period and it % solver.checkpoint_period == 0 and is_main_process():
                save_checkpoint(out_dir / "weights" / "last.pt", payload())
            if evaluate_fn is not None and solver.eval_period and it % solver.eval_period == 0 and it < max_iter:
                metrics = _evaluate(model, evaluate_fn, log, it, t0)
                model.train()
    except BaseException:
        if is_main_process():
            path = save_checkpoint(out_dir / "weights" / "last.pt", payload())
            print(f"\ntraining stopped at iteration {it}; saved {path}")
        raise
    finally:
        bar.close()
    if is_main_process():
        save_checkpoint(out_dir / "weights" / "last.pt", payload())
    if evaluate_fn is not None:
        metrics = _evaluate(model, evaluate_fn, log, it, t0)
        ap = metrics.get("bbox", {}).get("AP", -1.0) if metrics else -1.0
        if is_main_process() and ap > best:
            best = ap
            save_checkpoint(out_dir / "weights" / "best.pt", payload())
    if log is not None:
        log.close()
    return metrics


def _evaluate(model: nn.Module, evaluate_fn, log, it: int, t0: float) -> dict:
    model.eval()
    metrics = evaluate_fn(model)
    if log is not None and metrics:
        log.write(json.dumps({"iteration": it, "time_s": round(time.perf_counter() - t0, 1), "eval": metrics}) + "\n")
        log.flush()
    return metrics
