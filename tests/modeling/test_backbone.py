"""Backbone: torchvision weights in our detectron2 layout, freezing, deformable blocks."""

import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from blendseg.config import BackboneConfig
from blendseg.modeling.core.fpn import FPN
from blendseg.modeling.core.resnet import Bottleneck, ResNet, build_resnet, torchvision_to_ours


def _tv_features(tv, x):
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    c2 = tv.layer1(x)
    c3 = tv.layer2(c2)
    c4 = tv.layer3(c3)
    return c3, c4, tv.layer4(c4)


def test_torchvision_resnet_weights_map_exactly(tmp_path):
    for depth in (18, 50):
        tv = getattr(torchvision.models, f"resnet{depth}")().eval()
        for m in tv.modules():  # non-trivial BN statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        path = tmp_path / f"r{depth}.pth"
        torch.save(tv.state_dict(), path)
        cfg = BackboneConfig(
            depth=depth,
            res2_out_channels=64 if depth == 18 else 256,
            stride_in_1x1=False,
            weights=str(path),
            freeze_at=0,
        )
        ours = build_resnet(cfg).eval()
        x = torch.rand(1, 3, 64, 96)
        with torch.no_grad():
            ref = _tv_features(tv, x)
            out = ours(x)
        for r, name in zip(ref, ("res3", "res4", "res5")):
            torch.testing.assert_close(out[name], r, rtol=1e-4, atol=1e-4)


def test_key_map_covers_torchvision_layout():
    tv = torchvision.models.resnet50().state_dict()
    ours = ResNet(50, norm="BN", freeze_at=0).state_dict()
    mapped = torchvision_to_ours(tv)
    assert set(mapped) == {k for k in ours if not k.endswith("num_batches_tracked")}


def test_freeze_at_freezes_stem_and_res2_only():
    net = ResNet(18, norm="BN", freeze_at=2, res2_out_channels=64)
    assert not any(p.requires_grad for p in net.stem.parameters())
    assert not any(p.requires_grad for p in net.res2.parameters())
    assert all(p.requires_grad for p in net.res3.parameters())
    assert isinstance(net.res2[0].conv1.norm, FrozenBatchNorm2d)
    assert isinstance(net.res3[0].conv1.norm, torch.nn.BatchNorm2d)


def test_deformable_interval_and_zero_offset_equivalence():
    net = ResNet(
        50,
        freeze_at=0,
        deform_on_per_stage=(False, True, True, True),
        deform_modulated=True,
        deform_interval=3,
    )
    deform = [
        (n, i)
        for n in ("res2", "res3", "res4", "res5")
        for i, b in enumerate(getattr(net, n))
        if b.conv2_offset is not None
    ]
    assert deform == [("res3", 0), ("res3", 3), ("res4", 0), ("res4", 3), ("res5", 0)]
    # zero offsets: DCNv2 equals the plain 3x3 conv times sigmoid(0) = 0.5
    blk = Bottleneck(16, 32, 2, "BN", bottleneck_ch=8, deform=True, modulated=True).eval()
    x = torch.rand(1, 8, 12, 12)
    out = blk.conv2(x, torch.zeros(1, 18, 12, 12), torch.full((1, 9, 12, 12), 0.5))  # stride in the 1x1
    plain = torch.nn.functional.conv2d(x, blk.conv2.weight, None, 1, 1)
    torch.testing.assert_close(out, blk.conv2.norm(0.5 * plain))
    assert net(torch.rand(1, 3, 64, 64))["res5"].shape == (1, 2048, 2, 2)


def test_stride_in_1x1_places_the_stride():
    a = Bottleneck(64, 256, 2, "BN", bottleneck_ch=64, stride_in_1x1=True)
    b = Bottleneck(64, 256, 2, "BN", bottleneck_ch=64, stride_in_1x1=False)
    assert a.conv1.stride == (2, 2) and a.conv2.stride == (1, 1)
    assert b.conv1.stride == (1, 1) and b.conv2.stride == (2, 2)


def test_fpn_levels_and_top_block():
    fpn = FPN([8, 16, 32], [8, 16, 32], 8, top_levels=2)
    out = fpn([torch.rand(1, 8, 16, 20), torch.rand(1, 16, 8, 10), torch.rand(1, 32, 4, 5)])
    assert [o.shape[-2:] for o in out] == [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
    assert fpn.strides == [8, 16, 32, 64, 128]
    # P6 comes from P5 (the output), P7 from ReLU(P6)
    torch.testing.assert_close(out[3], fpn.top_block.p6(out[2]))
    torch.testing.assert_close(out[4], fpn.top_block.p7(torch.relu(out[3])))


def test_all_reduce_batchnorm_is_batchnorm_on_one_process():
    """CPU SyncBN (gloo processes): forward, gradients and running statistics of BatchNorm2d over the union."""
    import torch.distributed as dist

    from blendseg.modeling.core.layers import AllReduceBatchNorm2d

    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29533", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        ours, ref = AllReduceBatchNorm2d(4), torch.nn.BatchNorm2d(4)
        ref.load_state_dict(ours.state_dict())
        x = (torch.randn(3, 4, 5, 6) * 3 + 1).requires_grad_()
        y = x.detach().clone().requires_grad_()
        ours(x).square().sum().backward()
        ref(y).square().sum().backward()
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.running_var, ref.running_var)
        torch.testing.assert_close(ours.running_mean, ref.running_mean)
    finally:
        dist.destroy_process_group()


def test_frozen_bn_keeps_the_input_dtype_and_torchvisions_float32_numbers():
    """With gradients (training), detectron2's FrozenBatchNorm2d: x * scale + bias in the input's dtype (bf16 stays
    bf16 under autocast); in float32 exactly torchvision's FrozenBatchNorm2d."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    from blendseg.modeling.core.layers import FrozenBN

    torch.manual_seed(0)
    ours, tv = FrozenBN(8), FrozenBatchNorm2d(8)
    for m in (ours, tv):
        for name in ("weight", "bias", "running_mean"):
            getattr(m, name).copy_(torch.arange(8.0) / 3 - 1)
        m.running_var.copy_(torch.arange(8.0) + 0.5)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    assert torch.equal(ours(x), tv(x))
    half = x.detach().bfloat16().requires_grad_()
    assert ours(half).dtype == torch.bfloat16 and tv(half).dtype == torch.float32  # torchvision's promotes
