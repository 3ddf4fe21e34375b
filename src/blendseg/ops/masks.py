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
