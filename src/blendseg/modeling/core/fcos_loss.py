"""FCOS locations, target assignment and losses (AdelaiDet ``fcos_outputs.py``, adelaidet.md §1.3-§1.4).

Flattened per-location tensors follow the reference order: level-major, then image, then y, then x.

Shape legend: N images, P locations of one image (all levels), T = N * P, M ground-truth boxes of an image,
Q positives, C classes, L levels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from ...dist import reduce_mean
from ...ops.losses import centerness_target, iou_loss_ltrb, ltrb_iou
from .fcos_types import FCOSOutput, FCOSTargets

if TYPE_CHECKING:
    from ...config import FCOSConfig

INF = 100000000.0


def compute_locations(feats: list[Tensor], strides: list[int]) -> list[Tensor]:
    """Per level (H*W, 2) float (x, y) = (j*s + s//2, i*s + s//2), row-major (y outer, x inner)."""
    out = []
    for f, s in zip(feats, strides):
        h, w = f.shape[-2:]
        ys, xs = torch.meshgrid(
            torch.arange(0, h * s, s, dtype=torch.float32, device=f.device),
            torch.arange(0, w * s, s, dtype=torch.float32, device=f.device),
            indexing="ij",
        )
        out.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1) + s // 2)
    return out


def flatten_levels(per_level: list[Tensor]) -> Tensor:
    """L maps (N, X, H, W) -> (T, X) in reference order (level, image, y, x)."""
    return torch.cat([x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) for x in per_level])


def _sample_region(boxes: Tensor, radii: Tensor, xs: Tensor, ys: Tensor) -> Tensor:
    """(P, M) centre sampling: inside the GT box clipped to its centre +- radius (AdelaiDet get_sample_region)."""
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    r = radii[:, None]
    x0 = torch.maximum(cx[None] - r, boxes[None, :, 0])
    y0 = torch.maximum(cy[None] - r, boxes[None, :, 1])
    x1 = torch.minimum(cx[None] + r, boxes[None, :, 2])
    y1 = torch.minimum(cy[None] + r, boxes[None, :, 3])
    dist = torch.stack([xs - x0, ys - y0, x1 - xs, y1 - ys], dim=2)
    # reference quirk: a first GT centred at x == 0 makes every location negative (a tensor test: no host read)
    return (dist.min(dim=2).values > 0) & (cx[0] != 0)


@torch.no_grad()
def _targets_one_image(
    points: Tensor,
    strides: Tensor,
    lo: Tensor,
    hi: Tensor,
    boxes: Tensor,
    labels: Tensor,
    num_classes: int,
    center_sample: bool,
    radius: float,
) -> tuple[Tensor, Tensor, Tensor]:
    P = points.shape[0]
    if boxes.numel() == 0:
        return (
            torch.full((P,), num_classes, dtype=torch.int64, device=points.device),
            points.new_zeros((P, 4)),
            torch.full((P,), -1, dtype=torch.int64, device=points.device),
        )
    xs, ys = points[:, 0:1], points[:, 1:2]  # (P, 1)
    reg = torch.stack([xs - boxes[:, 0], ys - boxes[:, 1], boxes[:, 2] - xs, boxes[:, 3] - ys], dim=2)  # (P, M, 4)
    if center_sample:
        is_in = _sample_region(boxes, strides * radius, xs, ys)
    else:
        is_in = reg.min(dim=2).values > 0
    max_reg = reg.max(dim=2).values
    in_level = (max_reg >= lo[:, None]) & (max_reg <= hi[:, None])
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(P, -1).clone()
    area.masked_fill_(~(is_in & in_level), INF)
    min_area, inds = area.min(dim=1)  # ties: lowest GT index, as torch.min in the reference
    reg_t = reg[torch.arange(P, device=points.device), inds] / strides[:, None]
    neg = min_area == INF
    return labels[inds].masked_fill(neg, num_classes), reg_t, inds.masked_fill(neg, -1)


@torch.no_grad()
def fcos_targets(
    locations: list[Tensor],
    strides: list[int],
    targets: list[dict[str, Tensor]],
    num_classes: int,
    sizes_of_interest: tuple[int, ...],
    center_sample: bool = True,
    pos_radius: float = 1.5,
) -> FCOSTargets:
    """Assign every location of every image to at most one GT box (centre sampling, size ranges, min area).

    Args:
        locations: L tensors (P_l, 2) from :func:`compute_locations`.
        targets: per image ``boxes`` (M, 4) xyxy input pixels and ``labels`` (M,) in 0..C-1.
    """
    device = locations[0].device
    soi = [-1.0, *[float(s) for s in sizes_of_interest], INF]
    num_loc = [len(loc) for loc in locations]
    points = torch.cat(locations)
    lo = torch.cat([points.new_full((n,), soi[i]) for i, n in enumerate(num_loc)])
    hi = torch.cat([points.new_full((n,), soi[i + 1]) for i, n in enumerate(num_loc)])
    stride_per = torch.cat([points.new_full((n,), float(s)) for s, n in zip(strides, num_loc)])
    labels, regs, inds = [], [], []
    offset = 0
    for t in targets:
        lab, reg, ind = _targets_one_image(
            points,
            stride_per,
            lo,
            hi,
            t["boxes"].float(),
            t["labels"],
            num_classes,
            center_sample,
            pos_radius,
        )
        labels.append(lab)
        regs.append(reg)
        inds.append(torch.where(ind >= 0, ind + offset, ind))
        offset += len(t["boxes"])
    N = len(targets)
    level_of = torch.cat([torch.full((n,), i, dtype=torch.int64, device=device) for i, n in enumerate(num_loc)])

    def flat(per_image: list[Tensor]) -> Tensor:  # (N, P, ...) -> level-major (T, ...)
        x = torch.stack(per_image)
        return torch.cat([c.reshape(-1, *x.shape[2:]) for c in x.split(num_loc, dim=1)])

    labels_f = flat(labels)
    reg_f = flat(regs)
    im_inds = flat([torch.full((points.shape[0],), i, dtype=torch.int64, device=device) for i in range(N)])
    pos_inds = torch.nonzero(labels_f != num_classes).squeeze(1)
    ctr = centerness_target(reg_f[pos_inds])
    num_pos_avg = torch.clamp(reduce_mean(torch.tensor(float(pos_inds.numel()), device=device)), min=1.0)
    loss_denorm = torch.clamp(reduce_mean(ctr.sum()), min=1e-6)
    return FCOSTargets(
        labels_f, reg_f, flat(inds), im_inds, flat([level_of] * N), pos_inds, ctr, num_pos_avg, loss_denorm
    )


def fcos_losses(
    out: FCOSOutput, targets: FCOSTargets, cfg: FCOSConfig, moving_num_fg: Tensor | None = None
) -> dict[str, Tensor]:
    """FCOS losses with the reference normalisers (adelaidet.md §1.4).

    ``loss_fcos_cls`` = focal sum / normaliser ("fg": num_pos_avg, "moving_fg": EMA(0.9) of it started at 100
    and kept in ``moving_num_fg``, "all": mean location count); ``loss_fcos_loc`` = sum((1 - GIoU) * ctr) /
    loss_denorm; ``loss_fcos_ctr`` = BCE sum / num_pos_avg. With ``box_quality="iou"``: unweighted IoU loss /
    num_pos_avg and ``loss_fcos_iou`` = BCE(quality, IoU) / num_pos_avg.
    """
    logits = flatten_levels(out.logits)
    reg = flatten_levels(out.box_reg)
    quality = flatten_levels(out.quality).squeeze(1)
    pos = targets.pos_inds
    cls_target = torch.zeros_like(logits)
    cls_target[pos, targets.labels[pos]] = 1.0
    if cfg.loss_normalizer_cls == "fg":
        normalizer = targets.num_pos_avg
    elif cfg.loss_normalizer_cls == "moving_fg":
        if moving_num_fg is None:
            raise ValueError("loss_normalizer_cls='moving_fg' needs the moving_num_fg buffer")
        moving_num_fg.mul_(0.9).add_(0.1 * targets.num_pos_avg)
        normalizer = moving_num_fg.clone()
    elif cfg.loss_normalizer_cls == "all":
        normalizer = torch.clamp(reduce_mean(torch.tensor(float(logits.shape[0]), device=logits.device)), min=1.0)
    else:
        raise ValueError(f"unknown loss_normalizer_cls {cfg.loss_normalizer_cls!r}")
    loss_cls = sigmoid_focal_loss(logits, cls_target, cfg.loss_alpha, cfg.loss_gamma, reduction="sum")
    losses = {"loss_fcos_cls": loss_cls / normalizer * cfg.loss_weight_cls}
    reg_p, reg_t, q_p = reg[pos], targets.reg_targets[pos], quality[pos]
    if cfg.box_quality == "ctrness":
        losses["loss_fcos_loc"] = (
            iou_loss_ltrb(reg_p, reg_t, targets.ctr_targets, cfg.loc_loss_type) / targets.loss_denorm
        )
        bce = F.binary_cross_entropy_with_logits(q_p, targets.ctr_targets, reduction="sum")
        losses["loss_fcos_ctr"] = bce / targets.num_pos_avg
    elif cfg.box_quality == "iou":
        losses["loss_fcos_loc"] = iou_loss_ltrb(reg_p, reg_t, None, cfg.loc_loss_type) / targets.num_pos_avg
        iou = ltrb_iou(reg_p, reg_t).detach()
        losses["loss_fcos_iou"] = F.binary_cross_entropy_with_logits(q_p, iou, reduction="sum") / targets.num_pos_avg
    else:
        raise ValueError(f"unknown box_quality {cfg.box_quality!r}")
    if pos.numel() == 0:  # keep every head in the graph (DDP) with exact zeros
        losses = {k: (v if k == "loss_fcos_cls" else reg.sum() * 0 + quality.sum() * 0) for k, v in losses.items()}
    return losses
