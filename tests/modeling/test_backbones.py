"""DLA-34 and DarkNet-53 on the shared backbone interface: any method takes any backbone, ImageNet-layout files
load, and training reaches every parameter (the reference's zero-gradient link keeps DDP's unused-parameter check
quiet)."""

import dataclasses

import pytest
import torch

from blendseg.config import BackboneConfig
from blendseg.modeling.core.backbones import build_backbone
from blendseg.zoo import build_model, get_preset

DLA = BackboneConfig(name="dla", depth=34, norm="BN", freeze_at=0)
DARKNET = BackboneConfig(name="darknet", depth=53, norm="BN", freeze_at=0, blocks_per_stage=(1, 1, 1, 1, 1))


@pytest.mark.parametrize("cfg", [DLA, DARKNET], ids=["dla34", "darknet53"])
def test_named_maps_with_their_strides_and_channels(cfg):
    net = build_backbone(cfg).eval()
    out = net(torch.rand(1, 3, 64, 96))
    assert set(out) == set(net.strides) == set(net.out_channels)
    for name, x in out.items():
        assert x.shape[1] == net.out_channels[name]
        assert (x.shape[2], x.shape[3]) == (64 // net.strides[name], 96 // net.strides[name])


@pytest.mark.parametrize(
    ("preset", "backbone", "features"),
    [
        ("blendmask_tiny_test", DARKNET, ("res3", "res4", "res5")),
        ("meinst_tiny_test", DLA, ("level3", "level4", "level5")),
        ("yolact_tiny_test", DLA, ("level3", "level4", "level5")),
        ("fcos_tiny_test", DARKNET, ("res3", "res4", "res5")),
    ],
)
def test_every_method_trains_on_either_backbone(preset, backbone, features):
    cfg = get_preset(preset).model
    cfg = dataclasses.replace(cfg, backbone=backbone, fpn=dataclasses.replace(cfg.fpn, in_features=features))
    model = build_model(cfg).train()
    if hasattr(model, "mask_encoding"):  # MEInst: any orthonormal encoding will do
        d, p = model.mask_encoding.components.shape
        model.mask_encoding.load_fit(
            torch.linalg.qr(torch.randn(p, d))[0].t().contiguous(), torch.ones(d), torch.zeros(p)
        )
    masks = torch.zeros(1, 96, 128, dtype=torch.bool)
    masks[0, 20:70, 30:90] = True
    target = {"boxes": torch.tensor([[30.0, 20.0, 90.0, 70.0]]), "labels": torch.tensor([1]), "masks": masks}
    out = model([torch.rand(3, 96, 128) * 255], [target])
    sum(out.losses.values()).backward()
    backbone_params = [(n, p) for n, p in model.named_parameters() if ".level" in n or "backbone" in n]
    assert backbone_params and all(p.grad is not None for _, p in backbone_params)


def test_dla_training_reaches_the_unused_projection():
    net = build_backbone(DLA).train()
    sum(v.sum() for v in net(torch.rand(1, 3, 64, 64)).values()).backward()
    assert net.level3.project[0].weight.grad is not None  # a zero gradient, as in the reference
    assert torch.count_nonzero(net.level3.project[0].weight.grad) == 0


@pytest.mark.parametrize("cfg", [DLA, DARKNET], ids=["dla34", "darknet53"])
def test_imagenet_layout_files_load(tmp_path, cfg):
    torch.manual_seed(0)
    src = build_backbone(cfg).state_dict()
    extra = {"fc.weight": torch.zeros(10, 512, 1, 1)} if cfg.name == "dla" else {}  # DLA's classifier is dropped
    path = tmp_path / "imagenet.pth"
    torch.save({**src, **extra}, path)
    torch.manual_seed(1)
    net = build_backbone(dataclasses.replace(cfg, weights=str(path)))
    for k, v in net.state_dict().items():
        assert torch.equal(v, src[k]), k
    torch.save({k: v for k, v in src.items() if "layers.1" not in k and "level1" not in k}, path)
    with pytest.raises(ValueError, match="lack"):
        build_backbone(dataclasses.replace(cfg, weights=str(path)))


def test_dla_and_darknet_refuse_what_they_do_not_have():
    with pytest.raises(ValueError, match="DLA depth"):
        build_backbone(dataclasses.replace(DLA, depth=60))
    with pytest.raises(ValueError, match="cannot be frozen"):
        build_backbone(dataclasses.replace(DLA, freeze_at=2))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone(dataclasses.replace(DLA, name="vovnet"))
