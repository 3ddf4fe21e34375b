"""Evaluation loop: run a model over a loader and feed a COCO evaluator with detections at original size."""

from __future__ import annotations

import time

import torch
from torch import nn

from ..dist import gather_objects, is_main_process
from ..evaluation.coco import COCOEvaluator
from ..inference.precision import autocast, to_float32


@torch.no_grad()
def run_evaluation(
    model: nn.Module,
    loader,
    evaluator: COCOEvaluator | list,
    device: torch.device,
    verbose: bool = True,
    precision: str = "fp32",
) -> dict:
    """Returns ``{"bbox": {"AP": ..., ...}}`` (percent; plus the sections of further evaluators, e.g.
    ``"panoptic"``, when ``evaluator`` is a list) on the main process; times the loop."""
    was_training = model.training
    model.eval()
    evaluators = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
    for e in evaluators:
        e.reset()
    t0, n, skipped = time.perf_counter(), 0, []
    for images, targets in loader:
        with autocast(precision, device):
            out = model(images.to(device))
        out = to_float32(out)
        orig = [tuple(int(v) for v in t["orig_size"]) for t in targets]
        dets = model.postprocess(out, orig)
        for i, t in enumerate(targets):
            if "skipped" in t:  # unreadable: no detections, so its ground truth still counts (as misses)
                skipped += t["skipped"]
                dets[i] = dets[i][torch.zeros(0, dtype=torch.int64)]
        for e in evaluators:
            e.process([int(t["image_id"]) for t in targets], dets)
        n += len(images)
    skipped = [m for part in gather_objects(skipped) for m in part]
    if verbose:
        dt = time.perf_counter() - t0
        print(f"inference on {n} images: {dt:.1f} s ({n / max(dt, 1e-9):.1f} img/s)")
    metrics = {}
    for e in evaluators:
        metrics.update(e.evaluate(verbose=verbose))
    if skipped and is_main_process():
        print(f"warning: {len(skipped)} unreadable evaluation image(s) scored with no detections:")
        print("\n".join(f"  {m}" for m in skipped))
        metrics["skipped_eval_images"] = skipped
    model.train(was_training)
    return metrics
