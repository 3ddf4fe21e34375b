"""Panoptic-FPN's heuristic that merges instance masks and a semantic map into one panoptic map.

Shape legend: D detections, H x W output image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .resize import bilinear_axis, resample_window


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
    up_rows = [t[:h] for t in bilinear_axis(logits.shape[-2], logits.shape[-2] * stride, stride)]
    up_cols = [t[:w] for t in bilinear_axis(logits.shape[-1], logits.shape[-1] * stride, stride)]
    a, b = rows
    if tuple(output_size) == (h, w):  # the resize is the identity
        return resample_window(logits, [t[a:b] for t in up_rows], up_cols)
    out_rows = [t[a:b] for t in bilinear_axis(h, output_size[0])]
    lo, hi = int(out_rows[0].min()), int(out_rows[1].max()) + 1
    mid = resample_window(logits, [t[lo:hi] for t in up_rows], up_cols)  # rows lo..hi-1 of the (S, h, w) map
    shifted = [out_rows[0] - lo, out_rows[1] - lo, out_rows[2], out_rows[3]]
    return resample_window(mid, shifted, bilinear_axis(w, output_size[1]))


def semantic_argmax(
    logits: Tensor,
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    stride: int = 4,
    chunk_bytes: int = 64 << 20,
) -> Tensor:
    """(H, W) int32 argmax over the S classes of the postprocessed semantic logits (:func:`semantic_logits_rows`),
    computed in row chunks of about ``chunk_bytes`` so that memory does not grow with S x H x W."""
    H, W = output_size
    step = max(1, chunk_bytes // (4 * logits.shape[0] * max(W, image_size[1]) * 2))
    out = torch.empty((H, W), dtype=torch.int32, device=logits.device)
    for a in range(0, H, step):
        b = min(H, a + step)
        out[a:b] = semantic_logits_rows(logits, image_size, output_size, stride, (a, b)).argmax(0).to(torch.int32)
    return out
