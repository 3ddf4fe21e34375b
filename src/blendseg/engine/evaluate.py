"""Evaluation loop: run a model over a loader and feed a COCO evaluator with detections at original size."""

from __future__ import annotations

import time

import torch
from torch import nn

from ..evaluation.coco import COCOEvaluator


@torch.no_grad()
def run_evaluation(
    model: nn.Module, loader, evaluator: COCOEvaluator | list, device: torch.device, verbose: bool = True
) -> dict:
    """Returns ``{"bbox": {"AP": ..., ...}}`` (percent; plus the sections of further evaluators, e.g.
    ``"panoptic"``, when ``evaluator`` is a list) on the main process; times the loop."""
    was_training = model.training
    model.eval()
    evaluators = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
    for e in evaluators:
        e.reset()
    t0, n = time.perf_counter(), 0
    for images, targets in loader:
        out = model(images.to(device))
        orig = [tuple(int(v) for v in t["orig_size"]) for t in targets]
        dets = model.postprocess(out, orig)
        for e in evaluators:
            e.process([int(t["image_id"]) for t in targets], dets)
        n += len(images)
    if verbose:
        dt = time.perf_counter() - t0
        print(f"inference on {n} images: {dt:.1f} s ({n / max(dt, 1e-9):.1f} img/s)")
    metrics = {}
    for e in evaluators:
        metrics.update(e.evaluate(verbose=verbose))
    model.train(was_training)
    return metrics
