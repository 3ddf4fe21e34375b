"""YOLACT training targets and losses exactly as the official ``MultiBoxLoss`` (yolact.md §2.3-2.9).

- :func:`match`: one-to-one forced matching, pos 0.5 / neg 0.4 (between: neutral -1), crowd IoF > 0.7 neutral.
- box: smooth-L1 on SSD offsets of positives x 1.5; class: softmax CE on positives + OHEM 3:1 negatives;
  mask: BCE of sigmoid(proto @ coef) cropped with the matched GT box, summed per mask and divided by the GT box area
  in proto pixels, at most 100 masks per image (rescaled), x 6.125; all three / total positives of the batch.
- semantic: BCE-with-logits of the P3 semantic conv vs max-merged downsampled masks, / (h*w), / batch size.
- YOLACT++ mask IoU: smooth-L1 of the class's predicted IoU vs IoU(pred > 0.5, GT) for masks with more than 25 GT
  pixels at proto resolution, x 25, / total positives; not detached from the mask branch (official).

Shape legend: N images, P priors, G ground truths of an image, C foreground classes, k prototypes,
h x w prototype size, Q positives of an image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import YolactHeadConfig
from ...ops.anchors import encode_boxes, point_form
from ...ops.masks import crop_masks
from ...ops.nms import pairwise_iou


def match(
    truths: Tensor,
    labels: Tensor,
    priors: Tensor,
    pos_iou: float,
    neg_iou: float,
    crowd_boxes: Tensor | None = None,
    crowd_iof: float = 0.7,
) -> tuple[Tensor, Tensor]:
    """Per prior (P,) class target (label + 1, 0 background, -1 neutral) and (P,) matched GT index.

    truths (G, 4) relative xyxy, labels (G,) 0-based, priors (P, 4) (cx, cy, w, h). Every GT first takes, greedily
    by global IoU maximum, one prior of its own (overlap set to 2), whatever that IoU is.
    """
    decoded = point_form(priors)
    overlaps = pairwise_iou(truths, decoded)  # (G, P)
    best_truth_overlap, best_truth_idx = overlaps.max(0)
    for _ in range(overlaps.shape[0]):  # indices stay on the device (index_fill_, not [i]): no host read a GT
        best_prior_overlap, best_prior_idx = overlaps.max(1)
        j = best_prior_overlap.max(0, keepdim=True)[1]  # (1,)
        i = best_prior_idx[j]  # (1,)
        overlaps.index_fill_(1, i, -1).index_fill_(0, j, -1)
        best_truth_overlap.index_fill_(0, i, 2)
        best_truth_idx.index_copy_(0, i, j)
    conf = labels[best_truth_idx] + 1
    conf = conf.masked_fill(best_truth_overlap < pos_iou, -1).masked_fill(best_truth_overlap < neg_iou, 0)
    if crowd_boxes is not None and len(crowd_boxes) and crowd_iof < 1:
        lt = torch.maximum(decoded[:, None, :2], crowd_boxes[None, :, :2])
        rb = torch.minimum(decoded[:, None, 2:], crowd_boxes[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        iof = inter / ((decoded[:, 2] - decoded[:, 0]) * (decoded[:, 3] - decoded[:, 1]))[:, None]
        conf = conf.masked_fill((conf <= 0) & (iof.max(1).values > crowd_iof), -1)
    return conf, best_truth_idx


def ohem_conf_loss(conf: Tensor, conf_t: Tensor, negpos_ratio: int) -> Tensor:
    """Summed softmax CE over positives and, per image, the 3 x #positives negatives of highest -log p(bg).

    conf (N, P, C+1) logits, conf_t (N, P) targets (-1 neutral, 0 background). The CE of every prior is
    logsumexp - the target's logit (one logsumexp, which also ranks the negatives), summed under the selection as
    a weight: the selection's size never leaves the device."""
    flat = conf.reshape(-1, conf.shape[-1]).float()  # float32 under autocast too, as F.cross_entropy is
    lse = torch.logsumexp(flat, 1)
    pos = conf_t > 0
    with torch.no_grad():
        rank = (lse - flat[:, 0]).view(conf_t.shape)  # -log p(background)
        rank = rank.masked_fill(pos | (conf_t < 0), 0)
        _, order = rank.sort(1, descending=True)
        _, idx_rank = order.sort(1)
        num_neg = torch.clamp(negpos_ratio * pos.long().sum(1, keepdim=True), max=pos.shape[1] - 1)
        neg = (idx_rank < num_neg) & ~pos & (conf_t >= 0)
    ce = lse - flat.gather(1, conf_t.clamp(min=0).reshape(-1, 1))[:, 0]
    return torch.where((pos | neg).reshape(-1), ce, 0).sum()


def _downsample_masks(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(G, H, W) {0, 1} -> (G, h, w) bilinear (align_corners False) then > 0.5, as float."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size), dtype=torch.float32)
    return (F.interpolate(masks[None].float(), size, mode="bilinear", align_corners=False)[0] > 0.5).float()


def mask_iou(pred: Tensor, gt: Tensor) -> Tensor:
    """(Q,) IoU of binary masks (Q, h, w)."""
    inter = (pred * gt).sum(dim=(1, 2))
    return inter / (pred.sum(dim=(1, 2)) + gt.sum(dim=(1, 2)) - inter)


def yolact_losses(out, targets: list[dict[str, Tensor]], c: YolactHeadConfig, maskiou_net: nn.Module | None):
    """All YOLACT losses of a batch: ``{"loss_box", "loss_cls", "loss_mask", "loss_sem"?, "loss_maskiou"?}``.

    ``out`` is a YolactOutput; targets hold absolute ``boxes`` / ``masks`` of the network input, ``labels`` and
    optionally ``crowd_boxes``."""
    H, W = out.input_size
    scale = torch.tensor([W, H, W, H], dtype=torch.float32, device=out.loc.device)
    targets = [
        {**tg, "masks": F.pad(tg["masks"], (0, W - tg["masks"].shape[-1], 0, H - tg["masks"].shape[-2]))}
        for tg in targets
    ]
    if c.discard_box_px > 0:
        targets = [_drop_small(tg, c.discard_box_px) for tg in targets]
    h, w = out.proto.shape[1:3]
    conf_t, loc_t, idx_t = [], [], []
    for tg in targets:
        truths = tg["boxes"].float() / scale
        crowd = tg["crowd_boxes"].float() / scale if "crowd_boxes" in tg else None
        if len(truths) == 0:  # the official data loader never yields these; all priors are background
            conf_t.append(torch.zeros(len(out.priors), dtype=torch.int64, device=scale.device))
            loc_t.append(torch.zeros_like(out.priors))
            idx_t.append(torch.zeros(len(out.priors), dtype=torch.int64, device=scale.device))
            continue
        conf, idx = match(truths, tg["labels"], out.priors, c.pos_iou, c.neg_iou, crowd, c.crowd_iof)
        conf_t.append(conf)
        loc_t.append(encode_boxes(truths[idx], out.priors))
        idx_t.append(idx)
    conf_t, loc_t, idx_t = torch.stack(conf_t), torch.stack(loc_t), torch.stack(idx_t)
    pos = conf_t > 0
    total_pos = pos.sum().float().clamp(min=1)  # the official divides by zero here: a batch without positives
    box = F.smooth_l1_loss(out.loc, loc_t, reduction="none").sum(-1)
    losses = {"loss_box": torch.where(pos, box, 0).sum() * c.bbox_alpha}
    losses["loss_cls"] = ohem_conf_loss(out.conf, conf_t, c.ohem_negpos_ratio) * c.conf_alpha
    loss_m = out.proto.sum() * 0 + out.coef.sum() * 0
    iou_inputs, iou_targets, iou_labels, iou_keep = [], [], [], []
    pos_per_image = pos.sum(1).tolist()  # with the nonzero below, the mask loss's two host reads a step
    pos_idx = pos.nonzero()[:, 1].split(pos_per_image)
    for i, (tg, q) in enumerate(zip(targets, pos_idx)):
        if q.numel() == 0:
            continue
        gt_masks = _downsample_masks(tg["masks"], (h, w))  # (G, h, w)
        gt_idx, coef = idx_t[i, q], out.coef[i, q]
        old_num = q.numel()
        if old_num > c.masks_to_train:
            select = torch.randperm(old_num, device=q.device)[: c.masks_to_train]
            gt_idx, coef = gt_idx[select], coef[select]
        boxes = tg["boxes"].float()[gt_idx] / scale  # (Q, 4) relative GT boxes
        mask_t = gt_masks[gt_idx]
        # float32 outside autocast: binary_cross_entropy on probabilities is refused under CUDA autocast
        with torch.autocast(out.proto.device.type, enabled=False):
            pred = crop_masks(torch.sigmoid(out.proto[i].float() @ coef.float().t()).permute(2, 0, 1), boxes)
            bce = F.binary_cross_entropy(pred.clamp(0, 1), mask_t, reduction="none").sum(dim=(1, 2))
        area = (boxes[:, 2] - boxes[:, 0]) * w * (boxes[:, 3] - boxes[:, 1]) * h
        per_mask = bce / area * (old_num / coef.shape[0])
        loss_m = loss_m + per_mask.sum()
        if maskiou_net is not None:  # every mask goes in, those of small GT masks weighted 0 (no host read)
            keep = mask_t.sum(dim=(1, 2)) > c.discard_mask_area
            iou_keep.append(keep)
            iou_inputs.append(pred)
            iou_targets.append(torch.where(keep, mask_iou((pred > 0.5).float(), mask_t), 0))  # 0 / 0 left out
            iou_labels.append(tg["labels"][gt_idx])
    losses["loss_mask"] = loss_m * c.mask_alpha
    for k in losses:
        losses[k] = losses[k] / total_pos
    if maskiou_net is not None:
        loss_i = sum(p.sum() * 0 for p in maskiou_net.parameters())
        if iou_inputs:
            pred_iou = maskiou_net(torch.cat(iou_inputs)[:, None]).gather(1, torch.cat(iou_labels)[:, None])[:, 0]
            per = F.smooth_l1_loss(pred_iou, torch.cat(iou_targets), reduction="none")
            loss_i = loss_i + torch.where(torch.cat(iou_keep), per, 0).sum() * c.maskiou_alpha
        losses["loss_maskiou"] = loss_i / total_pos
    if out.sem_logits is not None:
        losses["loss_sem"] = semantic_loss(out.sem_logits, targets) * c.semantic_alpha / len(targets)
    return losses


def _drop_small(tg: dict[str, Tensor], min_px: float) -> dict[str, Tensor]:
    wh = tg["boxes"][:, 2:] - tg["boxes"][:, :2]
    keep = (wh > min_px).all(1)
    return {**tg, "boxes": tg["boxes"][keep], "labels": tg["labels"][keep], "masks": tg["masks"][keep]}


def semantic_loss(sem_logits: Tensor, targets: list[dict[str, Tensor]]) -> Tensor:
    """Sum over images of BCE-with-logits (sum) / (h*w) against class channels max-merged from the masks
    downsampled to P3 (bilinear, > 0.5)."""
    n, C, h, w = sem_logits.shape
    total = sem_logits.sum() * 0
    for i, tg in enumerate(targets):
        masks = _downsample_masks(tg["masks"], (h, w))
        seg_t = torch.zeros((C, h, w), device=sem_logits.device)
        index = tg["labels"][:, None, None].expand_as(masks)
        seg_t.scatter_reduce_(0, index, masks, "amax")  # each class's masks max-merged
        total = total + F.binary_cross_entropy_with_logits(sem_logits[i], seg_t, reduction="sum") / (h * w)
    return total
