"""BlendMask's blender maths as pure functions (adelaidet.md §2.4).

Shape legend: N instances, K bases, M attention size, R bottom (RoI) resolution, H x W bases size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align


def pool_bases(bases: Tensor, boxes: Tensor, batch_idx: Tensor, resolution: int, stride: int) -> Tensor:
    """(N, K, R, R) RoIAlign of the bases (B, K, H, W) inside boxes (N, 4) xyxy input pixels of images
    ``batch_idx`` (N,): detectron2's ROIAlignV2 (aligned, sampling ratio 1, scale 1/stride)."""
    rois = torch.cat([batch_idx[:, None].to(boxes.dtype), boxes], dim=1)
    return roi_align(bases, rois, (resolution, resolution), 1.0 / stride, sampling_ratio=1, aligned=True)


def blend(rois: Tensor, attns: Tensor, interp: str = "bilinear") -> Tensor:
    """Mask logits (N, R, R) = sum_k softmax_k(resize(attn_k, R)) * rois_k (AdelaiDet ``merge_bases``).

    Args:
        rois: (N, K, R, R) pooled bases.
        attns: (N, K*M*M) flat (channel k*M*M + i*M + j) or (N, K, M, M) attentions.
        interp: "bilinear" (align_corners False) or "nearest" resizing of the M x M attentions to R x R.
    """
    n, k, r = rois.shape[0], rois.shape[1], rois.shape[-1]
    if attns.dim() == 2:
        m = int(round((attns.shape[1] / k) ** 0.5))
        attns = attns.view(n, k, m, m)
    if interp == "bilinear":
        attns = F.interpolate(attns, (r, r), mode="bilinear", align_corners=False)
    elif interp == "nearest":
        attns = F.interpolate(attns, (r, r), mode="nearest")
    else:
        raise ValueError(f"interp must be 'bilinear' or 'nearest', got {interp!r}")
    return (attns.softmax(dim=1) * rois).sum(dim=1)
