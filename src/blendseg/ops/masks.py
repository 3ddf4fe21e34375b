"""Mask pasting: per-box (N, S, S) masks into the full image, as detectron2's ``paste_masks_in_image``.

Shape legend: N instances, S mask size, H x W image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def paste_masks_in_image(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float = 0.5) -> Tensor:
    """(N, H, W) bool: each soft mask (N, S, S) resampled into its box (N, 4) xyxy pixels, then ``>= threshold``.

    Bilinear ``grid_sample`` (align_corners False) at pixel centres (+0.5), zero outside the mask, exactly as
    detectron2's ``_do_paste_mask``. Each mask is sampled only over its box's pixel window (+1 px), so memory is
    O(N*H*W) bits for the output plus one box-sized float buffer at a time.
    """
    h, w = image_size
    out = torch.zeros((masks.shape[0], h, w), dtype=torch.bool, device=masks.device)
    if masks.shape[0] == 0:
        return out
    boxes = boxes.float()
    x0i = torch.clamp(torch.floor(boxes[:, 0]) - 1, min=0).long().tolist()
    y0i = torch.clamp(torch.floor(boxes[:, 1]) - 1, min=0).long().tolist()
    x1i = torch.clamp(torch.ceil(boxes[:, 2]) + 1, max=w).long().tolist()
    y1i = torch.clamp(torch.ceil(boxes[:, 3]) + 1, max=h).long().tolist()
    for i in range(masks.shape[0]):
        if x1i[i] <= x0i[i] or y1i[i] <= y0i[i]:
            continue
        x0, y0, x1, y1 = boxes[i]
        ys = (torch.arange(y0i[i], y1i[i], device=masks.device, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
        xs = (torch.arange(x0i[i], x1i[i], device=masks.device, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
        grid = torch.stack([xs[None, :].expand(len(ys), -1), ys[:, None].expand(-1, len(xs))], dim=2)
        soft = F.grid_sample(masks[i][None, None].float(), grid[None], align_corners=False)[0, 0]
        out[i, y0i[i] : y1i[i], x0i[i] : x1i[i]] = soft >= threshold
    return out


def crop_and_resize_masks(masks: Tensor, boxes: Tensor, size: int) -> Tensor:
    """(M, size, size) float {0, 1} targets: each bitmask (M, H, W) cropped to its box (M, 4) and resized with
    RoIAlign (aligned, adaptive sampling) then ``>= 0.5``, as detectron2's ``BitMasks.crop_and_resize``."""
    from torchvision.ops import roi_align

    if masks.shape[0] == 0:
        return masks.new_zeros((0, size, size), dtype=torch.float32)
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=torch.float32)[:, None], boxes.float()], 1)
    out = roi_align(masks[:, None].float(), rois, (size, size), 1.0, sampling_ratio=0, aligned=True)
    return (out[:, 0] >= 0.5).float()


def thing_semantic_map(masks: Tensor, labels: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W) int64 "thing" map: 0 background, label + 1 inside each mask (M, h, w), later instances painted over
    earlier ones (AdelaiDet's prepare_thing_sem_from_instance order); zero padding up to ``size``."""
    out = torch.zeros(size, dtype=torch.int64, device=labels.device)
    h, w = masks.shape[-2:]
    for m, c in zip(masks, labels):
        out[:h, :w][m.bool()] = int(c) + 1
    return out


def crop_masks(masks: Tensor, boxes: Tensor, padding: int = 1) -> Tensor:
    """YOLACT's crop: zero each mask (N, H, W) outside its box (N, 4) xyxy *relative*, widened by ``padding``
    pixels; column c is kept iff clamp(min(x1, x2) * W - padding, 0) <= c < clamp(max(x1, x2) * W + padding, W)."""
    n, h, w = masks.shape
    x1, x2 = _sanitize(boxes[:, 0], boxes[:, 2], w, padding)
    y1, y2 = _sanitize(boxes[:, 1], boxes[:, 3], h, padding)
    cols = torch.arange(w, device=masks.device, dtype=x1.dtype)[None, None, :]
    rows = torch.arange(h, device=masks.device, dtype=y1.dtype)[None, :, None]
    keep = (cols >= x1[:, None, None]) & (cols < x2[:, None, None]) & (rows >= y1[:, None, None])
    return masks * (keep & (rows < y2[:, None, None]))


def _sanitize(a: Tensor, b: Tensor, size: int, padding: int) -> tuple[Tensor, Tensor]:
    a, b = a * size, b * size
    return torch.clamp(torch.minimum(a, b) - padding, min=0), torch.clamp(torch.maximum(a, b) + padding, max=size)


def instance_mask_targets(target: dict, size: int) -> Tensor:
    """(M, size, size) float {0, 1} training targets of an image's instances cropped to their own boxes: polygon
    instances rasterised inside the box (detectron2 ``PolygonMasks.crop_and_resize``, the reference default
    MASK_FORMAT "polygon") when the target carries ``polygons``, the rest through :func:`crop_and_resize_masks`
    (``BitMasks``)."""
    out = crop_and_resize_masks(target["masks"], target["boxes"], size)
    polygons = target.get("polygons")
    if polygons:
        from ..data.rle import rasterize_polygons_in_box

        for i, rings in enumerate(polygons):
            if rings is not None:
                box = target["boxes"][i].tolist()
                m = rasterize_polygons_in_box([r.tolist() for r in rings], box, size)
                out[i] = torch.from_numpy(m).to(out)
    return out
