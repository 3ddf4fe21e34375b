"""YOLACT's Fast NMS (yolact.md §3.2) as a pure function, and a standard-NMS alternative on torchvision.

Shape legend: P candidate boxes, C classes, K per-class top-k, D kept detections.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """(..., n, m) IoU of xyxy boxes a (..., n, 4) and b (..., m, 4), batched over leading dims (no +1)."""
    lt = torch.maximum(a[..., :, None, :2], b[..., None, :, :2])
    rb = torch.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]))[..., :, None]
    area_b = ((b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1]))[..., None, :]
    return inter / (area_a + area_b - inter)


def fast_nms(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float = 0.5,
    top_k: int = 200,
    max_det: int = 100,
    second_threshold: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fast NMS per class: each class's top-k by score, a box is dropped when any higher-scoring box of its class
    overlaps it by more than ``iou_threshold`` (suppressed boxes still suppress), then the top ``max_det`` overall.

    Args:
        boxes: (P, 4) xyxy. scores: (C, P) per-class scores of the same candidates.
        second_threshold: when set, also drop per-class scores <= it (the official flag, off by default).
    Returns:
        (D,) candidate index, (D,) class, (D,) score, sorted by descending score.
    """
    scores, idx = scores.sort(1, descending=True)
    idx, scores = idx[:, :top_k], scores[:, :top_k]  # (C, K)
    iou = pairwise_iou(boxes[idx], boxes[idx]).triu_(diagonal=1)  # (C, K, K)
    # "max over higher-scoring boxes <= threshold", written as any() so no candidates (the official Detect returns
    # None) needs no branch, the exported graph included; a NaN IoU suppresses, as it does through max()
    keep = ~((iou > iou_threshold) | iou.isnan()).any(dim=1)
    if second_threshold is not None:
        keep &= scores > second_threshold
    classes = torch.arange(scores.shape[0], device=scores.device)[:, None].expand_as(keep)[keep]
    idx, scores = idx[keep], scores[keep]
    scores, order = scores.sort(0, descending=True)
    order = order[:max_det]
    return idx[order], classes[order], scores[:max_det]


def standard_nms(
    boxes: Tensor, scores: Tensor, iou_threshold: float = 0.5, score_threshold: float = 0.05, max_det: int = 100
) -> tuple[Tensor, Tensor, Tensor]:
    """Greedy NMS per class (torchvision ``batched_nms``) over every (candidate, class) with score > threshold, then
    the top ``max_det``; same return as :func:`fast_nms`. The official Cython NMS uses the +1-pixel area convention,
    this one does not."""
    from torchvision.ops import batched_nms

    cls, cand = (scores > score_threshold).nonzero(as_tuple=True)
    s = scores[cls, cand]
    keep = batched_nms(boxes[cand], s, cls, iou_threshold)[:max_det]
    return cand[keep], cls[keep], s[keep]
