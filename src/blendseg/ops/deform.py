"""Deformable convolution (DCNv1 / modulated DCNv2) as bilinear sampling + one matrix product: the same function as
``torchvision.ops.deform_conv2d`` (one offset group), built from ``grid_sample`` and ``matmul`` so that it runs at
the speed of those kernels (torchvision's CPU kernel is several times slower) and under autocast. On the
deterministic path (:mod:`~blendseg.ops.deterministic`) the sampling is four gathers instead of ``grid_sample``,
whose CUDA backward accumulates with atomics. (On a GPU the models call torchvision's CUDA kernel instead, which
keeps no sampled maps: ``blendseg.modeling.core.layers.deform_conv2d_fp32``.)

Shape legend: N images, C input channels, O output channels, G conv groups, K = kh * kw taps, H x W input,
Ho x Wo output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor

from . import deterministic

_export_decomposed: ContextVar[bool] = ContextVar("export_decomposed", default=False)


@contextlib.contextmanager
def export_decomposed() -> Iterator[None]:
    """Inside: an export traces deformable convs as this module's ``grid_sample`` + ``matmul`` (runtimes without
    ONNX DeformConv: OpenVINO's converter) instead of torchvision's op (one ONNX DeformConv node)."""
    token = _export_decomposed.set(True)
    try:
        yield
    finally:
        _export_decomposed.reset(token)


def exports_decomposed() -> bool:
    return _export_decomposed.get()


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def deform_conv2d(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """``torchvision.ops.deform_conv2d`` with one offset group: x (N, C, H, W), offset (N, 2K, Ho, Wo) as (dy, dx)
    per tap, weight (O, C/G, kh, kw), mask (N, K, Ho, Wo) or None (DCNv1). Tap k of output (i, j) reads x
    bilinearly at (i*sh - ph + ki*dh + dy, j*sw - pw + kj*dw + dx), zero outside the image."""
    N, C, H, W = x.shape
    O, Cg, kh, kw = weight.shape
    G, K = C // Cg, kh * kw
    if offset.shape[1] != 2 * K:
        raise ValueError(f"one offset group supported: offset has {offset.shape[1]} channels, expected {2 * K}")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    Ho, Wo = offset.shape[-2:]
    dtype = x.dtype
    base_y = (torch.arange(Ho, device=x.device, dtype=dtype) * sh - ph)[:, None]  # (Ho, 1)
    base_x = (torch.arange(Wo, device=x.device, dtype=dtype) * sw - pw)[None, :]  # (1, Wo)
    off = offset.view(N, K, 2, Ho, Wo)
    gather = deterministic.wanted(x)
    cols = []
    for k in range(K):
        ki, kj = divmod(k, kw)
        y = base_y + ki * dh + off[:, k, 0]  # (N, Ho, Wo) input pixel coordinates
        xx = base_x + kj * dw + off[:, k, 1]
        if gather:
            sampled = bilinear_gather(x, y, xx)
        else:
            grid = torch.stack([(2 * xx + 1) / W - 1, (2 * y + 1) / H - 1], dim=-1)  # pixel p -> (2p + 1) / size - 1
            sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if mask is not None:
            sampled = sampled * mask[:, k : k + 1]
        cols.append(sampled)  # (N, C, Ho, Wo)
    cols = torch.stack(cols, dim=2).view(N, G, Cg * K, Ho * Wo)  # channel-major, then tap: the weight's layout
    out = torch.matmul(weight.view(G, O // G, Cg * K), cols)  # (N, G, O/G, Ho*Wo)
    out = out.reshape(N, O, Ho, Wo)
    return out + bias.view(1, O, 1, 1) if bias is not None else out


def bilinear_gather(x: Tensor, y: Tensor, xx: Tensor) -> Tensor:
    """(N, C, Ho, Wo) bilinear samples of x (N, C, H, W) at pixel coordinates y, xx (N, Ho, Wo), from gathers (whose
    backward is deterministic on a GPU), with torchvision's deformable-conv rule: a sample at y <= -1, y >= H,
    x <= -1 or x >= W is zero, a neighbour outside the image counts zero. The weights are linear in the coordinates,
    so at integer positions (where deformable offsets start) the gradient is the one-sided difference, as there."""
    N, C, H, W = x.shape
    flat = x.reshape(N, C, H * W)
    y0, x0 = y.detach().floor(), xx.detach().floor()
    ly, lx = y - y0, xx - x0  # (N, Ho, Wo) distance to the top-left neighbour, carrying the coordinates' gradient
    out = None
    for dy, wy in ((0, 1 - ly), (1, ly)):
        for dx, wx in ((0, 1 - lx), (1, lx)):
            yi, xi = y0 + dy, x0 + dx
            inside = (yi >= 0) & (yi <= H - 1) & (xi >= 0) & (xi <= W - 1)
            idx = (yi.clamp(0, H - 1) * W + xi.clamp(0, W - 1)).long().view(N, 1, -1).expand(N, C, -1)
            term = flat.gather(2, idx).view(N, C, *y.shape[1:]) * (wy * wx * inside)[:, None]
            out = term if out is None else out + term
    return out
