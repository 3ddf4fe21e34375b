"""Dense-detection losses: IoU / GIoU on (l, t, r, b) distances with AdelaiDet's +1 smoothing; cross entropy that
stays repeatable on a GPU in deterministic mode.

Shape legend: P positives; N samples, C classes, ... any further (spatial) dimensions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import deterministic


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """``F.cross_entropy`` of logits (N, C, ...) and int64 targets (N, ...) (no weights, no smoothing); on the
    deterministic path (:mod:`~blendseg.ops.deterministic`) as log-softmax and a gather, since CUDA's NLL kernels
    reduce with atomics. "mean" averages over the targets that are not ``ignore_index``."""
    if not deterministic.wanted(logits):
        return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction=reduction)
    valid = target != ignore_index
    picked = F.log_softmax(logits, dim=1).gather(1, torch.where(valid, target, 0).unsqueeze(1)).squeeze(1)
    loss = -picked * valid
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / valid.sum()
    raise ValueError(f"reduction must be none, sum or mean, got {reduction!r}")


def iou_loss_ltrb(pred: Tensor, target: Tensor, weight: Tensor | None = None, loss_type: str = "giou") -> Tensor:
    """Summed IoU-type loss between boxes given as distances from a shared point (AdelaiDet ``IOULoss``).

    Args:
        pred, target: (P, 4) non-negative (l, t, r, b) distances, any common unit (FCOS: stride units).
        weight: (P,) optional per-box weights (FCOS: centerness targets).
        loss_type: "iou" (-log IoU), "linear_iou" (1 - IoU) or "giou" (1 - GIoU).

    IoU is smoothed as ``(inter + 1) / (union + 1)`` and the enclosing area gets ``+1e-7``, exactly as the
    reference, so the value depends on the unit (stride units in FCOS).

    Returns:
        scalar: ``sum(loss * weight)`` (or the plain sum without weights).
    """
    pl, pt, pr, pb = pred.unbind(-1)
    tl, tt, tr, tb = target.unbind(-1)
    target_area = (tl + tr) * (tt + tb)
    pred_area = (pl + pr) * (pt + pb)
    w_inter = torch.min(pl, tl) + torch.min(pr, tr)
    h_inter = torch.min(pb, tb) + torch.min(pt, tt)
    g_w = torch.max(pl, tl) + torch.max(pr, tr)
    g_h = torch.max(pb, tb) + torch.max(pt, tt)
    enclose = g_w * g_h + 1e-7
    inter = w_inter * h_inter
    union = target_area + pred_area - inter
    ious = (inter + 1.0) / (union + 1.0)
    if loss_type == "iou":
        losses = -torch.log(ious)
    elif loss_type == "linear_iou":
        losses = 1 - ious
    elif loss_type == "giou":
        losses = 1 - (ious - (enclose - union) / enclose)
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}")
    return (losses * weight).sum() if weight is not None else losses.sum()


def ltrb_iou(pred: Tensor, target: Tensor) -> Tensor:
    """(P,) IoU of (l, t, r, b) box pairs sharing a point, with the same +1 smoothing (FCOS ``box_quality=iou``)."""
    inter = (torch.min(pred[:, 0], target[:, 0]) + torch.min(pred[:, 2], target[:, 2])) * (
        torch.min(pred[:, 1], target[:, 1]) + torch.min(pred[:, 3], target[:, 3])
    )
    area_p = (pred[:, 0] + pred[:, 2]) * (pred[:, 1] + pred[:, 3])
    area_t = (target[:, 0] + target[:, 2]) * (target[:, 1] + target[:, 3])
    return (inter + 1.0) / (area_p + area_t - inter + 1.0)


def centerness_target(reg_targets: Tensor) -> Tensor:
    """(P,) FCOS centerness sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)) of (P, 4) (l, t, r, b) targets."""
    if reg_targets.numel() == 0:
        return reg_targets.new_zeros(0)
    lr = reg_targets[:, [0, 2]]
    tb = reg_targets[:, [1, 3]]
    ctr = (lr.min(dim=-1).values / lr.max(dim=-1).values) * (tb.min(dim=-1).values / tb.max(dim=-1).values)
    return torch.sqrt(ctr)
