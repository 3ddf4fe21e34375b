"""The deterministic path (ops/deterministic.py), checked on the CPU with ``everywhere()``: each substitute computes
the op it replaces (values and gradients, float64), and a training step of every method in deterministic mode runs
none of the ops whose CUDA kernels are not repeatable, while the same step outside that mode does run them (so the
check can fail)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode

from blendseg.ops import deterministic
from blendseg.ops.deform import deform_conv2d
from blendseg.ops.losses import cross_entropy
from blendseg.ops.resize import bilinear_resize
from blendseg.zoo import suite_presets

# ops whose CUDA kernels accumulate with atomics or that PyTorch refuses in strict deterministic mode on CUDA
# (torch.use_deterministic_algorithms' documentation), as dispatcher names
NOT_REPEATABLE_ON_CUDA = {
    "aten::upsample_bilinear2d_backward", "aten::upsample_linear1d_backward", "aten::upsample_bicubic2d_backward",
    "aten::upsample_trilinear3d_backward", "aten::grid_sampler_2d_backward", "aten::nll_loss_forward",
    "aten::nll_loss2d_forward", "aten::_adaptive_avg_pool2d_backward", "aten::adaptive_max_pool2d_backward",
    "aten::avg_pool3d_backward", "aten::reflection_pad2d_backward", "aten::max_unpool2d", "aten::histc",
    "aten::bincount", "aten::_embedding_bag_backward", "aten::_ctc_loss_backward", "aten::put_",
    "torchvision::_deform_conv2d_backward", "torchvision::_roi_pool_backward",
}  # fmt: skip
# torchvision::_roi_align_backward is not listed: torchvision runs its own deterministic roi_align in this mode on CUDA


@pytest.fixture
def deterministic_everywhere():
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with deterministic.everywhere():
            yield
    finally:
        torch.use_deterministic_algorithms(before)


def _grads(fn, *inputs):
    inputs = [x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs]
    out = fn(*inputs)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
    return out.detach(), [x.grad for x in inputs if x.is_floating_point()]


def _same(fast, det, *inputs):
    v0, g0 = _grads(fast, *inputs)
    with deterministic.everywhere():
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            v1, g1 = _grads(det, *inputs)
        finally:
            torch.use_deterministic_algorithms(before)
    torch.testing.assert_close(v1, v0)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [((2, 3, 5, 7), {"size": (11, 4)}), ((1, 2, 6, 6), {"scale_factor": 2}), ((1, 2, 7, 5), {"scale_factor": 4})],
)
def test_bilinear_resize_is_interpolate(shape, kwargs):
    x = torch.randn(shape, dtype=torch.float64)
    _same(
        lambda t: F.interpolate(t, mode="bilinear", align_corners=False, **kwargs),
        lambda t: bilinear_resize(t, **kwargs),
        x,
    )


def test_cross_entropy_is_torchs():
    logits = torch.randn(2, 5, 4, 6, dtype=torch.float64)
    target = torch.randint(0, 5, (2, 4, 6))
    target[0, :2] = 255
    _same(lambda t: F.cross_entropy(t, target, ignore_index=255), lambda t: cross_entropy(t, target, 255), logits)
    flat, labels = torch.randn(9, 4, dtype=torch.float64), torch.randint(0, 4, (9,))
    _same(
        lambda t: F.cross_entropy(t, labels, reduction="sum"), lambda t: cross_entropy(t, labels, reduction="sum"), flat
    )


@pytest.mark.parametrize("zero_offsets", [True, False])
def test_gathered_deformable_sampling_is_torchvisions(zero_offsets):
    """At zero offsets every tap samples an integer position, the border taps exactly -1 or H: the gradient towards
    the offsets must still be torchvision's (deformable convs start there: their offset convs are zero-initialised).
    (grid_sample's is not a reference at those points: its grid coordinates round to either side of the integer.)"""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    offset = torch.zeros(2, 18, 7, 6, dtype=torch.float64) if zero_offsets else 2.5 * torch.randn(2, 18, 7, 6).double()
    weight, mask = torch.randn(5, 4, 3, 3, dtype=torch.float64), torch.rand(2, 9, 7, 6, dtype=torch.float64)

    def ours(x, offset, weight, mask):
        return deform_conv2d(x, offset, weight, None, 1, 1, 1, mask)

    def torchvisions(x, offset, weight, mask):
        return torchvision.ops.deform_conv2d(x, offset, weight, None, 1, 1, 1, mask)

    _same(torchvisions, ours, x, offset, weight, mask)


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func._schema.name)
        return func(*args, **(kwargs or {}))


def _train_step_ops(preset: str, data_yaml, overrides: list[str]) -> set[str]:
    from blendseg.data.loader import build_loader
    from blendseg.engine.runner import build_dataset, with_num_classes
    from blendseg.overrides import apply_overrides
    from blendseg.zoo import build_model, get_preset

    cfg = apply_overrides(get_preset(preset), ["data.num_workers=0", *overrides])
    ds = build_dataset(cfg, str(data_yaml), "train", train=True)
    cfg = with_num_classes(cfg, ds)
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    if hasattr(model, "prepare"):
        model.prepare(ds, log=lambda *_: None)
    images, targets = next(iter(build_loader(ds, 2, True, 0, cfg.model.size_divisibility)))
    with _Ops() as ops:
        out = model(images, targets)
        sum(out.losses.values()).backward()
    return ops.names


DEEPLAB = ["model.blendmask.bottom_module=deeplab", "model.blendmask.bottom_in_features=[p3,p5]",
           "model.blendmask.bases_stride=8"]  # fmt: skip
DCN_R50 = ["model.backbone.depth=50", "model.backbone.width_per_group=4", "model.backbone.res2_out_channels=16",
           "model.backbone.deform_on_per_stage=[false,true,true,true]",
           "model.backbone.deform_modulated=true"]  # fmt: skip
METHODS = [
    ("blendmask_tiny_test", []),
    ("blendmask_tiny_test", DEEPLAB),  # DeepLabV3+ bases: ASPP's image pooling, bilinear upsampling
    ("yolact_tiny_test", DCN_R50),  # YOLACT++'s modulated DCN backbone, bilinear FPN, protonet
    ("meinst_tiny_test", ["model.fcos.use_deformable=true"]),
    ("fcos_tiny_test", []),
]
assert {p for p, _ in METHODS} == set(suite_presets()), "a training step of every arch"


@pytest.mark.parametrize(("preset", "overrides"), METHODS)
def test_a_training_step_in_deterministic_mode_runs_only_repeatable_ops(
    preset, overrides, synth_data, deterministic_everywhere
):
    ops = _train_step_ops(preset, synth_data, overrides)
    assert not ops & NOT_REPEATABLE_ON_CUDA, sorted(ops & NOT_REPEATABLE_ON_CUDA)


def test_the_op_check_sees_them_outside_deterministic_mode(synth_data):
    ops = _train_step_ops("blendmask_tiny_test", synth_data, DEEPLAB)
    assert "aten::upsample_bilinear2d_backward" in ops
    assert "aten::nll_loss2d_forward" in ops or "aten::nll_loss_forward" in ops


@pytest.mark.slow
def test_panoptic_training_step_in_deterministic_mode(tmp_path, deterministic_everywhere):
    from blendseg.data.synth import synthesize

    data = synthesize(tmp_path / "pan", train=4, val=2, seed=3, min_size=96, max_size=128, panoptic=True)
    ops = _train_step_ops("blendmask_panoptic_tiny_test", data, [])
    assert not ops & NOT_REPEATABLE_ON_CUDA, sorted(ops & NOT_REPEATABLE_ON_CUDA)


def test_mask_targets_take_the_compiled_roi_align_and_match_the_python_one(monkeypatch):
    """torchvision.ops.roi_align goes to its Python _roi_align on CUDA in deterministic mode; the targets call the
    compiled operator (deterministic forward) and not the wrapper, and give the Python one's values (what CUDA
    gave before)."""
    import importlib

    from blendseg.ops.masks import crop_and_resize_masks

    tv = importlib.import_module("torchvision.ops.roi_align")  # the module (the package's name is the function)

    g = torch.Generator().manual_seed(0)
    masks = (torch.rand(5, 60, 80, generator=g) > 0.5).to(torch.uint8)
    xy = torch.rand(5, 2, generator=g) * 40
    boxes = torch.cat([xy, xy + 5 + torch.rand(5, 2, generator=g) * 30], 1)
    rois = torch.cat([torch.arange(5.0)[:, None], boxes], 1)
    python = (tv._roi_align(masks[:, None].float(), rois, 1.0, 28, 28, 0, True)[:, 0] >= 0.5).float()
    for where, name in ((tv, "_roi_align"), (tv, "roi_align"), (torchvision.ops, "roi_align")):  # the wrapper, too
        monkeypatch.setattr(where, name, lambda *a, **k: (_ for _ in ()).throw(AssertionError("not the compiled op")))
    torch.use_deterministic_algorithms(True)
    try:
        out = crop_and_resize_masks(masks, boxes, 28)
    finally:
        torch.use_deterministic_algorithms(False)
    assert torch.equal(out, python)
