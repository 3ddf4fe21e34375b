"""A convolution evaluated at chosen locations only: ``patches_at(x, ys, xs, k, p) @ weight.flatten(1).T`` is what a
dense stride-1 conv outputs there, at the cost of those locations (a detector that keeps 100 of 20 000 locations
needs 100 outputs of a per-location head).

Shape legend: C input channels, E output channels, k kernel size, H x W map, D locations, L levels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def patches_at(x: Tensor, ys: Tensor, xs: Tensor, kernel_size: int, padding: int) -> Tensor:
    """(D, C*k*k) the k x k windows of ``x`` (C, H, W), zero-padded by ``padding``, whose top-left corners in the
    padded map are (ys, xs), i.e. the windows a stride-1 conv reads for outputs (ys, xs). Flattened as a conv weight
    (E, C, k, k).flatten(1). Coordinates are clamped into the map, so out-of-range ones read some window rather than
    failing (callers select the rows they need)."""
    xp = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.arange(kernel_size, device=x.device)
    rows = (ys[:, None] + offsets).clamp(0, xp.shape[1] - 1)  # (D, k)
    cols = (xs[:, None] + offsets).clamp(0, xp.shape[2] - 1)
    win = xp[:, rows[:, :, None], cols[:, None, :]]  # (C, D, k, k)
    return win.transpose(0, 1).reshape(ys.shape[0], x.shape[0] * kernel_size * kernel_size)


def conv_at(maps: list[Tensor], loc_inds: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """(D, E) a stride-1 conv (weight (E, C, k, k), bias (E,)) of one image's L maps (C, H_l, W_l) at D locations,
    ``loc_inds`` indexing the locations of all levels (level-major, row-major within a level): equal to the dense
    conv outputs gathered there, up to summation order."""
    patches, offset, k = None, 0, weight.shape[-1]
    for x in maps:
        h, w = x.shape[-2:]
        idx = loc_inds - offset
        ys = idx // w
        p = patches_at(x, ys, idx - ys * w, k, padding)  # not %: ONNX-exportable
        patches = p if patches is None else torch.where(((idx >= 0) & (idx < h * w))[:, None], p, patches)
        offset = offset + h * w
    out = patches @ weight.flatten(1).t()
    return out + bias if bias is not None else out
