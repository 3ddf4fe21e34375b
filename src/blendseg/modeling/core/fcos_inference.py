"""FCOS decoding: threshold, per-level top-k, class-aware NMS, top-k over all levels (adelaidet.md §1.5).

Shape legend: N images, C classes, E embedding size, H x W level size, D detections of an image.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from ...structures import BoxMasks, LazyMasks, PanopticResult


@dataclass
class Detections:
    """Detections of one image.

    Attributes:
        boxes: (D, 4) xyxy pixels. ``scores``: (D,) sqrt(cls * ctr). ``labels``: (D,) int64 contiguous ids.
        locations: (D, 2) (x, y) of the producing location; ``levels``: (D,) its FPN level.
        loc_inds: (D,) index of that location among the image's locations of all levels (level-major), i.e. the
            kept index extensions use to gather their own per-location maps.
        embeds: (D, E) the extension's embedding at that location, or None.
        masks: (D, H, W) bool masks once a mask method made them (kept compact: a
            :class:`~blendseg.structures.LazyMasks`), else None.
        panoptic: the image's :class:`~blendseg.structures.PanopticResult` (panoptic models), else None; a
            per-image field, carried unchanged by indexing.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    locations: Tensor
    levels: Tensor
    loc_inds: Tensor
    embeds: Tensor | None = None
    masks: LazyMasks | None = None
    panoptic: PanopticResult | None = None

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def __getitem__(self, idx: Tensor) -> Detections:
        per_image = {"panoptic"}
        return type(self)(
            **{
                f.name: (v if v is None or f.name in per_image else v[idx])
                for f in fields(self)
                for v in (getattr(self, f.name),)
            }
        )


def _decode_level(
    logits: Tensor,
    box_reg: Tensor,
    quality: Tensor,
    embeds: Tensor | None,
    locations: Tensor,
    stride: int,
    level: int,
    loc_offset: int,
    score_th: float,
    pre_nms_topk: int,
    thresh_with_ctr: bool,
) -> list[Detections]:
    N, C = logits.shape[:2]
    cls = logits.permute(0, 2, 3, 1).reshape(N, -1, C).sigmoid()
    reg = box_reg.permute(0, 2, 3, 1).reshape(N, -1, 4) * stride
    ctr = quality.permute(0, 2, 3, 1).reshape(N, -1).sigmoid()
    emb = embeds.permute(0, 2, 3, 1).reshape(N, -1, embeds.shape[1]) if embeds is not None else None
    if thresh_with_ctr:
        cls = cls * ctr[:, :, None]
    candidates = cls > score_th
    num_keep = candidates.reshape(N, -1).sum(1).clamp(max=pre_nms_topk)
    if not thresh_with_ctr:
        cls = cls * ctr[:, :, None]
    out = []
    for i in range(N):
        scores = cls[i][candidates[i]]
        nz = candidates[i].nonzero()  # row-major: location, then class
        loc_idx, cls_idx = nz[:, 0], nz[:, 1]
        if scores.numel() > int(num_keep[i]):
            scores, top = scores.topk(int(num_keep[i]), sorted=False)
            loc_idx, cls_idx = loc_idx[top], cls_idx[top]
        r, p = reg[i][loc_idx], locations[loc_idx]
        boxes = torch.stack([p[:, 0] - r[:, 0], p[:, 1] - r[:, 1], p[:, 0] + r[:, 2], p[:, 1] + r[:, 3]], dim=1)
        out.append(
            Detections(
                boxes=boxes,
                scores=torch.sqrt(scores),
                labels=cls_idx,
                locations=p,
                levels=torch.full_like(cls_idx, level),
                loc_inds=loc_idx + loc_offset,
                embeds=emb[i][loc_idx] if emb is not None else None,
            )
        )
    return out


def _cat(dets: list[Detections]) -> Detections:
    return Detections(
        **{
            f.name: (None if getattr(dets[0], f.name) is None else torch.cat([getattr(d, f.name) for d in dets]))
            for f in fields(Detections)
        }
    )


@torch.no_grad()
def fcos_candidates(
    logits: list[Tensor],
    box_reg: list[Tensor],
    quality: list[Tensor],
    embeds: list[Tensor] | None,
    locations: list[Tensor],
    strides: list[int],
    score_th: float = 0.05,
    pre_nms_topk: int = 1000,
    thresh_with_ctr: bool = False,
) -> list[Detections]:
    """Per image, the pre-NMS candidates of all levels: (location, class) pairs over the threshold, top-k per level,
    concatenated level-major (within a level: row-major location, then class).

    Boxes are not clipped (the reference pools mask features with unclipped boxes). Scores are
    sqrt(sigmoid(cls) * sigmoid(ctr)); with ``thresh_with_ctr`` the product is thresholded, else the class
    probability alone.
    """
    offsets = [0]
    for loc in locations[:-1]:
        offsets.append(offsets[-1] + len(loc))
    per_level = [
        _decode_level(
            logits[lvl],
            box_reg[lvl],
            quality[lvl],
            embeds[lvl] if embeds is not None else None,
            locations[lvl],
            strides[lvl],
            lvl,
            offsets[lvl],
            score_th,
            pre_nms_topk,
            thresh_with_ctr,
        )
        for lvl in range(len(logits))
    ]
    return [_cat([lvl_dets[i] for lvl_dets in per_level]) for i in range(logits[0].shape[0])]


def select_detections(candidates: Detections, nms_th: float = 0.6, post_nms_topk: int = 100) -> Detections:
    """Class-aware NMS, then drop detections scoring below the ``post_nms_topk``-th score (ties may keep more, as
    the reference's kthvalue). Order: descending score, as NMS returns it."""
    d = candidates[batched_nms(candidates.boxes, candidates.scores, candidates.labels, nms_th)]
    if len(d) > post_nms_topk > 0:
        kth = torch.kthvalue(d.scores.cpu(), len(d) - post_nms_topk + 1).values.item()
        d = d[d.scores >= kth]
    return d


@torch.no_grad()
def fcos_decode(
    logits: list[Tensor],
    box_reg: list[Tensor],
    quality: list[Tensor],
    embeds: list[Tensor] | None,
    locations: list[Tensor],
    strides: list[int],
    score_th: float = 0.05,
    pre_nms_topk: int = 1000,
    nms_th: float = 0.6,
    post_nms_topk: int = 100,
    thresh_with_ctr: bool = False,
) -> list[Detections]:
    """Decode the raw per-level outputs of a batch into per-image detections in input pixels:
    :func:`fcos_candidates` then :func:`select_detections` (adelaidet.md §1.5)."""
    cands = fcos_candidates(
        logits, box_reg, quality, embeds, locations, strides, score_th, pre_nms_topk, thresh_with_ctr
    )
    return [select_detections(c, nms_th, post_nms_topk) for c in cands]


def rescale_and_clip(
    boxes: Tensor, input_size: tuple[int, int], output_size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    """Boxes scaled from the input size to ``output_size`` (h, w): (scaled, scaled and clipped, keep mask of the
    non-empty clipped boxes), detectron2's ``detector_postprocess`` arithmetic. Column-wise, so the sizes may be
    symbolic (the export graph)."""
    (h, w), (H, W) = input_size, output_size
    sy, sx = H / h, W / w
    scaled = torch.stack([boxes[:, 0] * sx, boxes[:, 1] * sy, boxes[:, 2] * sx, boxes[:, 3] * sy], 1)
    clipped = torch.stack(
        [scaled[:, 0].clamp(0, W), scaled[:, 1].clamp(0, H), scaled[:, 2].clamp(0, W), scaled[:, 3].clamp(0, H)], 1
    )
    keep = ((clipped[:, 2] - clipped[:, 0]) > 0) & ((clipped[:, 3] - clipped[:, 1]) > 0)
    return scaled, clipped, keep


def detector_postprocess(dets: Detections, input_size: tuple[int, int], output_size: tuple[int, int]) -> Detections:
    """Scale boxes from the input size to ``output_size`` (h, w), clip to it and drop empty boxes (d2)."""
    _, clipped, keep = rescale_and_clip(dets.boxes, input_size, output_size)
    out = dets[keep]
    out.boxes = clipped[keep]
    return out


def finalize_with_masks(
    dets: Detections,
    mask_probs: Tensor,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    paste_in_clipped_box: bool = True,
) -> Detections:
    """detector_postprocess plus masks: per-box probabilities (D, S, S) to be pasted at 0.5 into the *clipped*
    boxes (the reference quirk: the mask was made for the unclipped box) or the unclipped ones, kept compact
    (:class:`~blendseg.structures.BoxMasks`: pixels are made per instance when asked for)."""
    scaled, clipped, keep = rescale_and_clip(dets.boxes, input_size, output_size)
    out = dets[keep]
    out.boxes = clipped[keep]
    out.masks = BoxMasks(mask_probs[keep], out.boxes if paste_in_clipped_box else scaled[keep], output_size)
    return out
