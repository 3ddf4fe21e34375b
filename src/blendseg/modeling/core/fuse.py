"""Batch norm folded into the convolution before it, for inference: ``fuse(model)``.

A BN in eval mode (or frozen) is the per-channel affine map ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so
``bn(conv(x))`` equals one convolution with ``w' = w * s`` and ``b' = (b - mean) * s + beta``, ``s = gamma /
sqrt(var + eps)`` (:func:`torch.nn.utils.fusion.fuse_conv_bn_weights`). Deformable convolutions fold the same way:
their output is linear in the weight too. Group norm depends on the input and stays.

Where the pairs are, in blendseg's modules:
- a module with ``weight`` and a BN ``norm`` child that it applies after its convolution
  (:class:`~blendseg.modeling.core.layers.Conv2dNorm`, :class:`~blendseg.modeling.core.layers.DeformConv2dNorm`);
- a ``Conv2d`` followed by a BN inside an ``nn.Sequential`` (bottom modules, DarkNet, DLA levels, towers with a BN
  shared over levels; per-level BNs in a ``ModuleList`` share one conv and stay);
- sibling children ``conv{k}`` / ``bn{k}`` (DLA's blocks and roots, whose forward is ``bn{k}(conv{k}(x))``).

Results change by float32 rounding only (about 1e-6 relative per layer); the model is for inference afterwards
(the folded BN's statistics are gone).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops import FrozenBatchNorm2d

BN_TYPES = (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)


def _fold(conv: nn.Module, bn: nn.Module) -> None:
    """``conv``'s weight and bias (created when absent) replaced by those of ``bn(conv(x))``."""
    with torch.no_grad():
        w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    conv.weight = nn.Parameter(w.detach(), requires_grad=False)
    conv.bias = nn.Parameter(b.detach(), requires_grad=False)


def _is_bn(m: nn.Module | None) -> bool:
    return isinstance(m, BN_TYPES) and (not m.training or isinstance(m, FrozenBatchNorm2d))


def fuse(model: nn.Module) -> int:
    """Fold every BN that follows a convolution (module docstring) into it, in place; ``model`` must be in eval
    mode. Returns how many were folded."""
    if model.training:
        raise ValueError("fuse: put the model in eval mode first (a training BN's output follows the batch)")
    count = 0
    for module in list(model.modules()):
        norm = getattr(module, "norm", None)
        if isinstance(getattr(module, "weight", None), nn.Parameter) and _is_bn(norm):
            _fold(module, norm)
            module.norm = None
            count += 1
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (_, a), (name_b, b) in zip(children, children[1:]):
                if isinstance(a, nn.Conv2d) and _is_bn(b):
                    _fold(a, b)
                    setattr(module, name_b, nn.Identity())
                    count += 1
        for name, child in list(module.named_children()):
            conv = getattr(module, "conv" + name[2:], None) if name.startswith("bn") else None
            if _is_bn(child) and isinstance(conv, nn.Conv2d):
                _fold(conv, child)
                setattr(module, name, nn.Identity())
                count += 1
    return count
