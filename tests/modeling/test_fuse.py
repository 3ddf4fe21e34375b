"""Batch norm folding (``Model.fuse`` / ``predict --fuse``): the same outputs up to float rounding, no BN left
where a conv precedes it, and refused on a training model."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from blendseg.modeling.core.fuse import BN_TYPES, fuse
from blendseg.zoo import build_model, get_preset, suite_presets


def _with_statistics(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, BN_TYPES):  # non-trivial statistics, so a wrong fold shows
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def _tensors(obj) -> list[torch.Tensor]:
    """The float tensors in a model output (dataclasses, dicts, lists of them), in a fixed order."""
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if dataclasses.is_dataclass(obj):
        return [t for f in dataclasses.fields(obj) for t in _tensors(getattr(obj, f.name))]
    if isinstance(obj, dict):
        return [t for k in sorted(obj) for t in _tensors(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


@pytest.mark.parametrize("preset", suite_presets(masks=True))
def test_fused_model_gives_the_same_outputs(preset):
    torch.manual_seed(0)
    model = _with_statistics(build_model(get_preset(preset).model))
    bns = sum(isinstance(m, BN_TYPES) for m in model.modules())
    image = torch.randint(0, 256, (3, 96, 128)).float()
    with torch.no_grad():
        ref = model([image])
        folded = fuse(model)
        out = model([image])
    left = sum(isinstance(m, BN_TYPES) for m in model.modules())
    assert folded > 0 and left == bns - folded
    ref_t, out_t = _tensors(ref), _tensors(out)
    assert len(ref_t) == len(out_t) > 5
    for a, b in zip(ref_t, out_t):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * max(1.0, float(a.abs().max())))


def test_a_conv_then_bn_sequential_folds_into_the_conv():
    """The Sequential rule on its own: the BN becomes an Identity and the conv alone gives the pair's output."""
    conv, bn = nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)
    _with_statistics(bn)
    seq = nn.Sequential(conv, bn).eval()
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        ref = seq(x)
        assert fuse(seq) == 1 and isinstance(seq[1], nn.Identity)
        torch.testing.assert_close(seq(x), ref, rtol=1e-5, atol=1e-5)


def test_fuse_refuses_a_training_model():
    with pytest.raises(ValueError, match="eval mode"):
        fuse(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train())
