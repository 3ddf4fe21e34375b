"""YOLACT / YOLACT++ presets: dbolya/yolact's ``data/config.py`` configs (the four YOLACT v1 releases, YOLACT++) and
the CPU recipes. Reported AP: the official README's COCO test-dev mask AP."""

from __future__ import annotations

from dataclasses import replace

from ..config import BackboneConfig, DataConfig, FPNConfig, SolverConfig, TrainConfig, YolactConfig, YolactHeadConfig
from .fcos import fcos_tiny
from .registry import preset

SRC = "dbolya/yolact data/config.py "


def _octave_scales(bases: tuple[float, ...]) -> tuple[tuple[float, ...], ...]:
    """YOLACT++'s anchors: each level's base x {1, 2^(1/3), 2^(2/3)}."""
    return tuple(tuple(b * 2 ** (i / 3) for i in range(3)) for b in bases)


@preset(SRC + "yolact_base_config", "mask AP 29.8")
def yolact_base() -> TrainConfig:
    """Official yolact_base (YOLACT-550, R-101-FPN): square anchors (v1 bug), 550 px squash with SSD augmentation,
    SGD lr 1e-3 (warmup from 1e-4 over 500 it), wd 5e-4 incl. BN, batch 8, 800k iterations, steps 280k/600k/700k/750k.
    ImageNet weights: torchvision's ResNet-101 (the official uses its own resnet101_reducedfc.pth)."""
    model = YolactConfig(backbone=replace(YolactConfig().backbone, weights="torchvision"))
    data = DataConfig(
        square_size=550,
        augment="ssd",
        with_masks=True,
        with_crowd_boxes=True,
        min_size_train=(550,),
        max_size_train=550,
        min_size_test=550,
        max_size_test=550,
    )
    solver = SolverConfig(
        base_lr=1e-3,
        momentum=0.9,
        weight_decay=5e-4,
        weight_decay_norm=5e-4,
        ims_per_batch=8,
        max_iter=800000,
        steps=(280000, 600000, 700000, 750000),
        warmup_iters=500,
        warmup_factor=0.1,
    )
    return TrainConfig(model=model, data=data, solver=solver)


@preset(SRC + "yolact_resnet50_config", "mask AP 28.2")
def yolact_resnet50() -> TrainConfig:
    """Official yolact_resnet50 (YOLACT-550, R-50-FPN)."""
    c = yolact_base()
    return replace(c, model=replace(c.model, backbone=replace(c.model.backbone, depth=50)))


@preset(SRC + "yolact_darknet53_config", "mask AP 28.7")
def yolact_darknet53() -> TrainConfig:
    """Official yolact_darknet53 (YOLACT-550, DarkNet-53-FPN on C3-C5): yolact_base's head and schedule, the
    DarkNet input transform (RGB / 255, no mean or std). ImageNet weights: dbolya's darknet53.pth has no public URL;
    give a local copy as ``model.backbone.weights``."""
    c = yolact_base()
    model = replace(
        c.model,
        backbone=BackboneConfig(name="darknet", depth=53, norm="BN", freeze_at=0),
        pixel_mean=(0.0, 0.0, 0.0),
        pixel_std=(255.0, 255.0, 255.0),
    )
    return replace(c, model=model)


def _yolact_size(c: TrainConfig, size: int, masks_to_train: int) -> TrainConfig:
    scales = tuple((int(s[0] / 550 * size),) for s in c.model.yolact.scales)
    head = replace(c.model.yolact, scales=scales, masks_to_train=masks_to_train)
    sq = dict(square_size=size, min_size_train=(size,), max_size_train=size, min_size_test=size, max_size_test=size)
    return replace(c, model=replace(c.model, yolact=head), data=replace(c.data, **sq))


@preset(SRC + "yolact_im400_config")
def yolact_im400() -> TrainConfig:
    """Official yolact_im400: 400 px, anchor scales int(s * 400 / 550)."""
    return _yolact_size(yolact_base(), 400, 100)


@preset(SRC + "yolact_im700_config", "mask AP 31.2")
def yolact_im700() -> TrainConfig:
    """Official yolact_im700: 700 px, anchor scales int(s * 700 / 550), 300 masks per image."""
    return _yolact_size(yolact_base(), 700, 300)


@preset(SRC + "yolact_plus_base_config", "mask AP 34.6")
def yolact_plus_base() -> TrainConfig:
    """Official yolact_plus_base (YOLACT++ R-101): DCNv2 (with bias) in C3-C5 every 3rd block, 3 scales x 3
    ratios of true rectangles, fast mask re-scoring (loss x 25, <= 25-pixel masks skipped)."""
    c = yolact_base()
    bb = replace(
        c.model.backbone,
        deform_on_per_stage=(False, True, True, True),
        deform_modulated=True,
        deform_interval=3,
        deform_bias=True,
    )
    head = replace(c.model.yolact, scales=_octave_scales((24, 48, 96, 192, 384)), square_anchors=False, maskiou=True)
    return replace(c, model=replace(c.model, backbone=bb, yolact=head))


@preset(SRC + "yolact_plus_resnet50_config", "mask AP 34.1")
def yolact_plus_resnet50() -> TrainConfig:
    """Official yolact_plus_resnet50: R-50 with DCN in *every* C3-C5 block (interval 1, yolact.md §1.2)."""
    c = yolact_plus_base()
    return replace(c, model=replace(c.model, backbone=replace(c.model.backbone, depth=50, deform_interval=1)))


@preset()
def yolact_tiny() -> TrainConfig:
    """fcos_tiny's backbone and recipe with YOLACT's head: narrow ResNet-18, 64-channel YOLACT FPN P3-P7, 64-wide
    protonet (k 32), YOLACT++ anchors (3 scales x 3 ratios, base 12-192 px) without DCN / re-scoring, 256 px squash
    with a mirror only, AdamW (CPU recipe; the paper presets use SGD and the SSD augmentation)."""
    t = fcos_tiny()
    model = YolactConfig(
        backbone=t.model.backbone,
        fpn=FPNConfig(out_channels=64, upsample="bilinear", relu_outputs=True, relu_before_p7=False),
        yolact=YolactHeadConfig(
            num_classes=6, scales=_octave_scales((12, 24, 48, 96, 192)), square_anchors=False, proto_dim=64
        ),
    )
    data = replace(
        t.data,
        square_size=256,
        augment="flip",
        with_masks=True,
        with_crowd_boxes=True,
        min_size_train=(256,),
        max_size_train=256,
        min_size_test=256,
        max_size_test=256,
    )
    return TrainConfig(model=model, data=data, solver=t.solver)


@preset()
def yolact_tiny_test() -> TrainConfig:
    """Smallest YOLACT for tests."""
    c = yolact_tiny()
    bb = replace(c.model.backbone, stem_out_channels=8, res2_out_channels=8)
    head = replace(c.model.yolact, proto_dim=8, num_prototypes=8)
    model = replace(c.model, backbone=bb, fpn=replace(c.model.fpn, out_channels=16), yolact=head)
    data = replace(c.data, square_size=128, num_workers=0)
    solver = replace(
        c.solver, ims_per_batch=2, max_iter=4, steps=(3,), warmup_iters=2, checkpoint_period=2, amp=False
    )  # fp32, as fcos_tiny_test
    return replace(c, model=model, data=data, solver=solver)
