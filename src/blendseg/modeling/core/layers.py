"""The layers every backbone and head shares: norms by name (FrozenBN / BN / SyncBN / GN, and SyncBN's CPU form for
gloo processes), ``Conv2dNorm`` (detectron2's conv + norm + activation, same state-dict keys), the deformable conv in
float32 and its module, and the reader of weight files.

Shape legend: N images, C channels, H x W feature size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from ...dist import all_reduce, backend, get_world_size
from ...ops import deterministic
from ...ops.deform import deform_conv2d, exports_decomposed


class FrozenBN(FrozenBatchNorm2d):
    """Frozen batch norm as detectron2's ``FrozenBatchNorm2d``: without gradients one fused ``F.batch_norm`` (what
    the reference runs at inference; the scale-and-shift form rounds differently), with gradients x * scale + bias
    in the input's dtype (the statistics and affine terms stay float32 buffers; under autocast the result stays in
    half precision, as detectron2's, rather than turning the rest of the block to float32)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            scale = self.weight * (self.running_var + self.eps).rsqrt()
            bias = self.bias - self.running_mean * scale
            return x * scale.to(x.dtype).reshape(1, -1, 1, 1) + bias.to(x.dtype).reshape(1, -1, 1, 1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; every process's output depends on every input, so the gradient is summed too."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:
        return all_reduce(t)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return all_reduce(grad)


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """SyncBN for CPU processes: batch statistics summed over processes with the differentiable all-reduce, so
    the forward and the gradients are those of BN over every process's images (state dict keys as BatchNorm2d)."""

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        stats = _AllReduceSum.apply(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        c = x.shape[1]
        n = stats[-1]
        mean, var = stats[:c] / n, stats[c : 2 * c] / n - (stats[:c] / n) ** 2
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1).clamp(min=1))
        shape = (1, c, 1, 1)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def get_norm(norm: str, channels: int) -> nn.Module | None:
    """Norm layer by name: FrozenBN | BN | SyncBN | GN | "" (none). SyncBN falls back to BN on one process."""
    if norm in ("", "none"):
        return None
    if norm == "FrozenBN":
        return FrozenBN(channels)
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "SyncBN":
        if get_world_size() > 1:
            # PyTorch's SyncBatchNorm is CUDA-only (DDP refuses it on CPU): gloo processes get the same statistics
            return nn.SyncBatchNorm(channels) if backend() == "nccl" else AllReduceBatchNorm2d(channels)
        return nn.BatchNorm2d(channels)  # the reference crashes here on one GPU (AdelaiDet#184)
    if norm == "GN":
        return nn.GroupNorm(32 if channels % 32 == 0 else _groups_for(channels), channels)
    raise ValueError(f"unknown norm {norm!r} (FrozenBN, BN, SyncBN, GN or none)")


def _groups_for(channels: int) -> int:
    for g in (16, 8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class Conv2dNorm(nn.Conv2d):
    """``nn.Conv2d`` with an optional ``norm`` child and ``activation`` function, as detectron2's ``layers.Conv2d``
    (same state-dict keys)."""

    def __init__(
        self, *args, norm: nn.Module | None = None, activation: Callable[[Tensor], Tensor] | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        strided_1x1 = self.kernel_size == (1, 1) and self.stride != (1, 1) and self.padding == (0, 0)
        if strided_1x1 and x.is_contiguous(memory_format=torch.channels_last):
            # the same conv as a subsampling and a stride-1 1x1 conv: PyTorch 2.14's CPU backward of a strided 1x1
            # conv on channels-last input with 2-15 input channels crashes (segfault / double free; ResNet
            # shortcuts of narrow test models, at 48 px and up)
            sh, sw = self.stride
            x = F.conv2d(x[..., ::sh, ::sw], self.weight, self.bias, 1, 0, self.dilation, self.groups)
        else:
            x = super().forward(x)
        x = self.norm(x) if self.norm is not None else x
        return self.activation(x) if self.activation is not None else x


def deform_conv2d_fp32(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int = 1,
    padding: int = 1,
    dilation: int = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable conv in float32 whatever autocast made of its inputs (the offsets need the precision): on the CPU
    :func:`~blendseg.ops.deform.deform_conv2d` (torchvision's function built from ``grid_sample`` + ``matmul``,
    several times faster than torchvision's CPU kernel); on CUDA torchvision's kernel, which keeps no sampled maps
    for the backward (the grid_sample form keeps K of them per layer), except on the deterministic path
    (:mod:`~blendseg.ops.deterministic`), where that kernel's backward is not repeatable. An ONNX export keeps
    torchvision's op, which becomes the single ONNX DeformConv node (inside ``ops.deform.export_decomposed``: the
    ``grid_sample`` form, for runtimes without DeformConv)."""
    from torchvision.ops import deform_conv2d as tv_deform_conv2d

    if torch.compiler.is_exporting() and not exports_decomposed():
        return tv_deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)
    conv = tv_deform_conv2d if x.device.type == "cuda" and not deterministic.wanted(x) else deform_conv2d
    if x.dtype == torch.float32 and offset.dtype == torch.float32 and (mask is None or mask.dtype == torch.float32):
        return conv(x, offset, weight, bias, stride, padding, dilation, mask)
    with torch.autocast(x.device.type, enabled=False):
        m = mask.float() if mask is not None else None
        b = bias.float() if bias is not None else None
        return conv(x.float(), offset.float(), weight.float(), b, stride, padding, dilation, m)


class DeformConv2dNorm(nn.Module):
    """Deformable 3x3 conv (DCNv1, or DCNv2 when ``modulated``) + norm (:func:`deform_conv2d_fp32`).

    The offset convolution (zero-initialised) lives beside it in the block as ``conv2_offset`` (detectron2's
    layout); its 18 offset channels are (dy, dx) pairs per kernel tap in both detectron2 and torchvision.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        dilation: int,
        groups: int,
        norm: nn.Module | None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch // groups, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=1)
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.stride, self.dilation = stride, dilation
        self.norm = norm

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None) -> Tensor:
        pad = self.dilation
        x = deform_conv2d_fp32(x, offset, self.weight, self.bias, self.stride, pad, self.dilation, mask)
        return self.norm(x) if self.norm is not None else x
