"""Comparing two predictions of one picture (another size, precision or runtime) without counting detections at a
threshold: what a model trained in the test detects near a threshold differs from machine to machine (its kernels
round differently and training amplifies that), so a count, or which detections cross the line, is not a property
of the code. A *confident* detection of one run must have a twin in the other, which may score lower by a margin."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

CONFIDENT = 0.5  # a detection that must have a twin in the other run
PRESENT = 0.25  # the threshold both runs are predicted at: a twin may score this low


def twins(a, b, scale: float = 1.0, confident: float = CONFIDENT) -> list[tuple[int, int, float]]:
    """``(i, j, iou)`` for each detection ``i`` of ``a`` scoring at least ``confident``: ``j`` is the detection of
    ``b`` with the same label whose box best overlaps ``a``'s box times ``scale`` (-1 and IoU 0 when ``b`` has none
    of that label). ``a`` and ``b`` are Results (or anything with boxes, labels and scores)."""
    out = []
    iou = box_iou(a.boxes * scale, b.boxes) if len(a) and len(b) else torch.zeros(len(a), len(b))
    for i in (a.scores >= confident).nonzero()[:, 0].tolist():
        same = b.labels == a.labels[i]
        if not same.any():
            out.append((i, -1, 0.0))
            continue
        row = torch.where(same, iou[i], torch.full_like(iou[i], -1.0))
        j = int(row.argmax())
        out.append((i, j, float(row[j])))
    return out


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum().clamp(min=1))
