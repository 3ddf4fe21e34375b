"""``F.interpolate(mode="bilinear", align_corners=False)`` in pieces: any window of its output without making the
rest (the semantic map of a large photo row by row, one instance's upsampled mask over its box only), and the whole
of it as two matrix products, whose backward is deterministic on a GPU (:mod:`~blendseg.ops.deterministic`).

Shape legend: N images, C channels, h x w input, H x W output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import deterministic


def bilinear_axis(
    in_size: int, out_size: int, scale_factor: float | None = None, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, ...]:
    """Source indices and weights of one axis of ``F.interpolate(mode="bilinear", align_corners=False)``, computed
    as PyTorch's CPU kernel does (in ``dtype``: float32 for float32 and half inputs, float64 for float64; the scale
    is 1 / scale_factor when one is given, else in / out)."""
    if scale_factor is not None:
        scale = torch.tensor(1.0 / scale_factor, dtype=dtype)
    else:
        scale = torch.tensor(in_size, dtype=dtype) / torch.tensor(out_size, dtype=dtype)
    src = (scale * (torch.arange(out_size, dtype=dtype) + 0.5) - 0.5).clamp(min=0)
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


def bilinear_matrix(
    in_size: int, out_size: int, scale_factor: float | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """(out, in) weights of one axis of the bilinear resize (:func:`bilinear_axis` in ``dtype``): row o holds the
    two source weights."""
    i0, i1, l0, l1 = bilinear_axis(in_size, out_size, scale_factor, dtype)
    rows = torch.arange(out_size)
    m = torch.zeros(out_size, in_size, dtype=dtype)
    m.index_put_((rows, i0), l0, accumulate=True)
    return m.index_put_((rows, i1), l1, accumulate=True)


def bilinear_resize(x: Tensor, size: tuple[int, int] | None = None, scale_factor: float | None = None) -> Tensor:
    """``F.interpolate(x, size or scale_factor, mode="bilinear", align_corners=False)`` of x (N, C, h, w); on the
    deterministic path (a GPU in deterministic mode, when gradients flow) as ``A_h @ x @ A_w^T``."""
    if not (deterministic.wanted(x) and x.requires_grad):
        return F.interpolate(x, size=size, scale_factor=scale_factor, mode="bilinear", align_corners=False)
    h, w = x.shape[-2:]
    if size is None:
        size, sf = (math.floor(h * scale_factor), math.floor(w * scale_factor)), scale_factor
    else:
        sf = None
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    a_h = bilinear_matrix(h, int(size[0]), sf, dtype).to(x)
    a_w = bilinear_matrix(w, int(size[1]), sf, dtype).to(x)
    return torch.matmul(torch.matmul(a_h, x), a_w.t())


class BilinearUpsample(nn.Module):
    """``nn.Upsample(scale_factor=s, mode="bilinear", align_corners=False)`` through :func:`bilinear_resize`."""

    def __init__(self, scale_factor: float = 2.0) -> None:
        super().__init__()
        self.scale_factor = scale_factor

    def forward(self, x: Tensor) -> Tensor:
        return bilinear_resize(x, scale_factor=self.scale_factor)

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}"
