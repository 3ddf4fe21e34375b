"""Panoptic-FPN's heuristic that merges instance masks and a semantic map into one panoptic map.

Shape legend: D detections, H x W output image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def combine_semantic_and_instances(
    masks: Tensor | Sequence[Tensor],
    scores: Tensor,
    labels: Tensor,
    semantic: Tensor,
    overlap_thresh: float = 0.4,
    stuff_area_limit: int = 4096,
    instances_confidence_thresh: float = 0.45,
) -> tuple[Tensor, list[dict]]:
    """detectron2's ``combine_semantic_and_instance_outputs`` (Panoptic FPN), the rule panoptic BlendMask uses.

    Instances are visited by descending score and the loop stops at the first score below
    ``instances_confidence_thresh``. An empty mask is skipped; so is a mask whose overlap with the pixels already
    assigned exceeds ``overlap_thresh`` of its area; otherwise its still-free pixels become a new segment. Then every
    semantic label except 0 (the merged "things" class), in ascending order, takes its still-free pixels as one
    stuff segment if there are at least ``stuff_area_limit`` of them.

    Args:
        masks: (D, H, W) bool instance masks (or any sequence of (H, W) masks; only those visited are read).
        scores: (D,) instance scores. ``labels``: (D,) contiguous thing labels.
        semantic: (H, W) integer semantic labels (0 = things, 1..S = stuff).

    Returns:
        ``panoptic_seg`` (H, W) int32 segment ids (0 = void) and ``segments_info``: per segment ``id``,
        ``isthing``, ``category_id`` (the thing label, or the stuff label 1..S), ``score`` and ``instance_id``
        (index into the inputs) for things, ``area`` for stuff; things first in score order, then stuff by label.
    """
    panoptic = torch.zeros_like(semantic, dtype=torch.int32)
    segments: list[dict] = []
    for idx in torch.argsort(-scores).tolist():
        score = float(scores[idx])
        if score < instances_confidence_thresh:
            break
        mask = masks[idx].to(device=panoptic.device, dtype=torch.bool)
        area = int(mask.sum())
        if area == 0:
            continue
        taken = panoptic > 0
        intersect = int((mask & taken).sum())
        if intersect / area > overlap_thresh:
            continue
        if intersect > 0:
            mask = mask & ~taken
        segment_id = len(segments) + 1
        panoptic[mask] = segment_id
        segments.append(
            {"id": segment_id, "isthing": True, "score": score, "category_id": int(labels[idx]), "instance_id": idx}
        )
    for label in torch.unique(semantic).tolist():
        if label == 0:  # the merged "things" class
            continue
        mask = (semantic == label) & (panoptic == 0)
        area = int(mask.sum())
        if area < stuff_area_limit:
            continue
        segment_id = len(segments) + 1
        panoptic[mask] = segment_id
        segments.append({"id": segment_id, "isthing": False, "category_id": int(label), "area": area})
    return panoptic, segments


def _linear_axis(in_size: int, out_size: int, scale_factor: float | None = None) -> tuple[Tensor, ...]:
    """Source indices and weights of one axis of ``F.interpolate(mode="bilinear", align_corners=False)``, computed
    as PyTorch's CPU kernel does (float32; the scale is 1 / scale_factor when one is given, else in / out)."""
    if scale_factor is not None:
        scale = torch.tensor(1.0 / scale_factor, dtype=torch.float32)
    else:
        scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    src = (scale * (torch.arange(out_size, dtype=torch.float32) + 0.5) - 0.5).clamp(min=0)
    i0 = src.long().clamp(max=in_size - 1)
    lam = (src - i0).clamp(0, 1)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    return i0, i1, 1 - lam, lam


def _interp_rows(x: Tensor, rows: tuple[Tensor, ...], cols: tuple[Tensor, ...]) -> Tensor:
    """(C, len(rows), len(cols)) bilinear samples of x (C, h, w): along the width first, then the height, the
    order of PyTorch's kernel; only the input rows the requested output rows touch are read."""
    i0, i1, l0, l1 = rows
    j0, j1, m0, m1 = (t.to(x.device) for t in cols)
    lo, hi = int(i0.min()), int(i1.max()) + 1
    r = x[:, lo:hi, j0] * m0 + x[:, lo:hi, j1] * m1
    return r[:, (i0 - lo).to(x.device)] * l0.to(x)[:, None] + r[:, (i1 - lo).to(x.device)] * l1.to(x)[:, None]


def semantic_logits_rows(
    logits: Tensor, image_size: tuple[int, int], output_size: tuple[int, int], stride: int, rows: tuple[int, int]
) -> Tensor:
    """Rows ``rows`` = [a, b) of detectron2's postprocessed semantic logits, (S, b - a, W), without making the whole
    (S, H, W) map: ``F.interpolate(logits, scale_factor=stride)`` (SemSegFPNHead at inference), crop to
    ``image_size`` (the model input size, before padding), bilinear resize to ``output_size``
    (``sem_seg_postprocess``).

    Args:
        logits: (S, h', w') semantic logits of one padded image at 1/``stride``.
    """
    h, w = image_size
    up_rows = [t[:h] for t in _linear_axis(logits.shape[-2], logits.shape[-2] * stride, stride)]
    up_cols = [t[:w] for t in _linear_axis(logits.shape[-1], logits.shape[-1] * stride, stride)]
    a, b = rows
    if tuple(output_size) == (h, w):  # the resize is the identity
        return _interp_rows(logits, [t[a:b] for t in up_rows], up_cols)
    out_rows = [t[a:b] for t in _linear_axis(h, output_size[0])]
    lo, hi = int(out_rows[0].min()), int(out_rows[1].max()) + 1
    mid = _interp_rows(logits, [t[lo:hi] for t in up_rows], up_cols)  # rows lo..hi-1 of the (S, h, w) map
    shifted = [out_rows[0] - lo, out_rows[1] - lo, out_rows[2], out_rows[3]]
    return _interp_rows(mid, shifted, _linear_axis(w, output_size[1]))


def semantic_argmax(
    logits: Tensor, image_size: tuple[int, int], output_size: tuple[int, int], stride: int = 4,
    chunk_bytes: int = 64 << 20,
) -> Tensor:  # fmt: skip
    """(H, W) int32 argmax over the S classes of the postprocessed semantic logits (:func:`semantic_logits_rows`),
    computed in row chunks of about ``chunk_bytes`` so that memory does not grow with S x H x W."""
    H, W = output_size
    step = max(1, chunk_bytes // (4 * logits.shape[0] * max(W, image_size[1]) * 2))
    out = torch.empty((H, W), dtype=torch.int32, device=logits.device)
    for a in range(0, H, step):
        b = min(H, a + step)
        out[a:b] = semantic_logits_rows(logits, image_size, output_size, stride, (a, b)).argmax(0).to(torch.int32)
    return out
