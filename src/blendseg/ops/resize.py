"""Any window of ``F.interpolate(mode="bilinear", align_corners=False)``'s output without making the rest: the
semantic map of a large photo row by row, one instance's upsampled mask over its box only.

Shape legend: C channels, h x w input, H x W output.
"""

from __future__ import annotations

import torch
from torch import Tensor


def bilinear_axis(in_size: int, out_size: int, scale_factor: float | None = None) -> tuple[Tensor, ...]:
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


def resample_window(x: Tensor, rows: tuple[Tensor, ...], cols: tuple[Tensor, ...]) -> Tensor:
    """(C, len(rows), len(cols)) bilinear samples of x (C, h, w): along the width first, then the height, the
    order of PyTorch's kernel; only the input rows the requested output rows touch are read.

    Args:
        rows / cols: :func:`bilinear_axis` of the height / width, sliced to the wanted output rows / columns.
    """
    i0, i1, l0, l1 = rows
    j0, j1, m0, m1 = (t.to(x.device) for t in cols)
    lo, hi = int(i0.min()), int(i1.max()) + 1
    r = x[:, lo:hi, j0] * m0 + x[:, lo:hi, j1] * m1
    return r[:, (i0 - lo).to(x.device)] * l0.to(x)[:, None] + r[:, (i1 - lo).to(x.device)] * l1.to(x)[:, None]
