"""FCOS presets: AdelaiDet ``configs/FCOS-Detection/`` and ``FCOS_RT/``, and the CPU recipes every method's tiny
preset builds on."""

from __future__ import annotations

from dataclasses import replace

from ..config import BackboneConfig, DataConfig, FCOSConfig, FCOSDetectorConfig, FPNConfig, SolverConfig, TrainConfig
from .registry import preset

MS_TRAIN = (640, 672, 704, 736, 768, 800)
RT_TRAIN = tuple(range(256, 609, 32))  # FCOS_RT / BlendMask RT: 256-608 step 32, max 900, test 512 (max 736)
SRC = "AdelaiDet configs/FCOS-Detection/"


@preset(SRC + "R_50_1x.yaml", "box AP 38.7")
def fcos_r50_1x() -> TrainConfig:
    """AdelaiDet FCOS-Detection/R_50_1x: R-50 MSRA weights, 800 px, 90k iterations at batch 16."""
    return TrainConfig(
        model=FCOSDetectorConfig(),
        data=DataConfig(min_size_train=(800,), aspect_ratio_grouping=True, mask_format="polygon"),
        solver=SolverConfig(),
    )


def with_iou_quality(c: TrainConfig) -> TrainConfig:
    """The ``_iou`` configs: the quality branch predicts the box IoU instead of centerness (BOX_QUALITY iou)."""
    return replace(c, model=replace(c.model, fcos=replace(c.model.fcos, box_quality="iou")))


@preset(SRC + "R_50_1x_iou.yaml")
def fcos_r50_1x_iou() -> TrainConfig:
    """FCOS-Detection/R_50_1x_iou: R_50_1x with IoU quality prediction."""
    return with_iou_quality(fcos_r50_1x())


@preset(SRC + "MS_R_50_2x.yaml", "box AP 41.0")
def fcos_ms_r50_2x() -> TrainConfig:
    """FCOS-Detection/MS_R_50_2x: multi-scale 640-800, 180k iterations."""
    c = fcos_r50_1x()
    return replace(
        c,
        data=replace(c.data, min_size_train=MS_TRAIN),
        solver=replace(c.solver, max_iter=180000, steps=(120000, 160000)),
    )


@preset(SRC + "MS_R_50_2x_iou.yaml")
def fcos_ms_r50_2x_iou() -> TrainConfig:
    """FCOS-Detection/MS_R_50_2x_iou: MS_R_50_2x with IoU quality prediction."""
    return with_iou_quality(fcos_ms_r50_2x())


@preset(SRC + "MS_R_101_2x.yaml", "box AP 43.1")
def fcos_ms_r101_2x() -> TrainConfig:
    """FCOS-Detection/MS_R_101_2x."""
    c = fcos_ms_r50_2x()
    return replace(c, model=replace(c.model, backbone=replace(c.model.backbone, depth=101)))


@preset(SRC + "MS_R_101_2x_iou.yaml")
def fcos_ms_r101_2x_iou() -> TrainConfig:
    """FCOS-Detection/MS_R_101_2x_iou: MS_R_101_2x with IoU quality prediction."""
    return with_iou_quality(fcos_ms_r101_2x())


def resnext101(c: TrainConfig, groups: int, width: int, pixel_std: tuple[float, float, float]) -> TrainConfig:
    """ResNeXt-101 (FAIR's C2 models: stride in the 3x3, their pixel std) in place of the config's ResNet."""
    bb = replace(c.model.backbone, depth=101, num_groups=groups, width_per_group=width, stride_in_1x1=False)
    return replace(c, model=replace(c.model, backbone=bb, pixel_std=pixel_std))


def with_dcnv2(c: TrainConfig) -> TrainConfig:
    """The ``_dcnv2`` configs: modulated DCN in every res4 / res5 block and as the last conv of both towers."""
    bb = replace(c.model.backbone, deform_on_per_stage=(False, False, True, True), deform_modulated=True)
    return replace(c, model=replace(c.model, backbone=bb, fcos=replace(c.model.fcos, use_deformable=True)))


FAIR_32X8D_STD = (57.375, 57.120, 58.395)


@preset(SRC + "MS_X_101_2x.yaml", "box AP 43.9 (README: FCOS_MS_X_101_32x8d_2x)")
def fcos_ms_x101_2x() -> TrainConfig:
    """FCOS-Detection/MS_X_101_2x: ResNeXt-101 32x8d (FAIR weights), multi-scale, 180k iterations."""
    return resnext101(fcos_ms_r50_2x(), 32, 8, FAIR_32X8D_STD)


@preset(SRC + "MS_X_101_32x8d_2x_iou.yaml")
def fcos_ms_x101_32x8d_2x_iou() -> TrainConfig:
    """FCOS-Detection/MS_X_101_32x8d_2x_iou: MS_X_101_2x with IoU quality prediction."""
    return with_iou_quality(fcos_ms_x101_2x())


@preset(SRC + "MS_X_101_32x8d_2x_dcnv2.yaml", "box AP 46.6")
def fcos_ms_x101_32x8d_2x_dcnv2() -> TrainConfig:
    """FCOS-Detection/MS_X_101_32x8d_2x_dcnv2: MS_X_101_2x with DCNv2 in res4-res5 and the towers' last convs."""
    return with_dcnv2(fcos_ms_x101_2x())


@preset(SRC + "MS_X_101_32x8d_2x_dcnv2_iou.yaml")
def fcos_ms_x101_32x8d_2x_dcnv2_iou() -> TrainConfig:
    """FCOS-Detection/MS_X_101_32x8d_2x_dcnv2_iou: the dcnv2 model with IoU quality prediction."""
    return with_iou_quality(fcos_ms_x101_32x8d_2x_dcnv2())


@preset(SRC + "MS_X_101_64x4d_2x.yaml", "box AP 44.7")
def fcos_ms_x101_64x4d_2x() -> TrainConfig:
    """FCOS-Detection/MS_X_101_64x4d_2x: ResNeXt-101 64x4d (pixel std 1), multi-scale, 180k iterations."""
    return resnext101(fcos_ms_r50_2x(), 64, 4, (1.0, 1.0, 1.0))


@preset(SRC + "MS_X_101_64x4d_2x_dcnv2.yaml")
def fcos_ms_x101_64x4d_2x_dcnv2() -> TrainConfig:
    """FCOS-Detection/MS_X_101_64x4d_2x_dcnv2: the 64x4d model with DCNv2 in res4-res5 and the towers."""
    return with_dcnv2(fcos_ms_x101_64x4d_2x())


def rt_sizes(c: TrainConfig) -> TrainConfig:
    """The RT data and schedule: 256-608 px training (max 900), test 512 (max 736), 360k (300k, 340k)."""
    data = replace(c.data, min_size_train=RT_TRAIN, max_size_train=900, min_size_test=512, max_size_test=736)
    return replace(c, data=data, solver=replace(c.solver, max_iter=360000, steps=(300000, 340000)))


def real_time(c: TrainConfig) -> TrainConfig:
    """The RT recipe (Base-RT): :func:`rt_sizes` on P3-P5 (no P6/P7)."""
    model = replace(
        c.model,
        fpn=replace(c.model.fpn, top_levels=0),
        fcos=replace(c.model.fcos, strides=(8, 16, 32), sizes_of_interest=(64, 128)),
    )
    return rt_sizes(replace(c, model=model))


def with_head_norm(c: TrainConfig, norm: str) -> TrainConfig:
    """The ``_bn_head`` configs: the towers' norm (GN by default) replaced."""
    return replace(c, model=replace(c.model, fcos=replace(c.model.fcos, norm=norm)))


def with_shared_towers(c: TrainConfig, convs: int) -> TrainConfig:
    """The ``_shared_towers`` / ``shtw`` configs: one tower of ``convs`` convs shared by classes and boxes."""
    fcos = replace(c.model.fcos, num_share_convs=convs, num_cls_convs=0, num_box_convs=0)
    return replace(c, model=replace(c.model, fcos=fcos))


DLA34 = BackboneConfig(name="dla", depth=34, norm="SyncBN", freeze_at=0, weights="imagenet")


def on_dla34(c: TrainConfig) -> TrainConfig:
    """DLA-34 (SyncBN, ImageNet weights from dl.yf.io) feeding level3-level5 to the FPN."""
    fpn = replace(c.model.fpn, in_features=("level3", "level4", "level5"))
    return replace(c, model=replace(c.model, backbone=DLA34, fpn=fpn))


RT = SRC + "FCOS_RT/"


@preset(RT + "MS_R_50_4x_syncbn.yaml", "box AP 40.2")
def fcos_rt_ms_r50_4x_syncbn() -> TrainConfig:
    """FCOS_RT/MS_R_50_4x_syncbn: R-50 with SyncBN (BN on one process; res2 and the stem frozen), GN towers."""
    c = real_time(fcos_ms_r50_2x())
    return replace(c, model=replace(c.model, backbone=replace(c.model.backbone, norm="SyncBN")))


@preset(RT + "MS_R_50_4x_syncbn_bn_head.yaml", "box AP 39.3")
def fcos_rt_ms_r50_4x_syncbn_bn_head() -> TrainConfig:
    """FCOS_RT/MS_R_50_4x_syncbn_bn_head: SyncBN in the towers too."""
    return with_head_norm(fcos_rt_ms_r50_4x_syncbn(), "SyncBN")


@preset(RT + "MS_DLA_34_4x_syncbn.yaml", "box AP 40.3")
def fcos_rt_ms_dla34_4x_syncbn() -> TrainConfig:
    """FCOS_RT/MS_DLA_34_4x_syncbn: DLA-34 with SyncBN, GN towers, the RT recipe."""
    return on_dla34(real_time(fcos_ms_r50_2x()))


@preset(RT + "MS_DLA_34_4x_syncbn_bn_head.yaml", "box AP 39.4")
def fcos_rt_ms_dla34_4x_syncbn_bn_head() -> TrainConfig:
    """FCOS_RT/MS_DLA_34_4x_syncbn_bn_head: SyncBN in the towers."""
    return with_head_norm(fcos_rt_ms_dla34_4x_syncbn(), "SyncBN")


@preset(RT + "MS_DLA_34_4x_syncbn_shared_towers.yaml", "box AP 39.1")
def fcos_rt_ms_dla34_4x_syncbn_shared_towers() -> TrainConfig:
    """FCOS_RT/MS_DLA_34_4x_syncbn_shared_towers: one shared tower of 4 convs."""
    return with_shared_towers(fcos_rt_ms_dla34_4x_syncbn(), 4)


@preset(RT + "MS_DLA_34_4x_syncbn_shared_towers_bn_head.yaml", "box AP 38.9")
def fcos_rt_ms_dla34_4x_syncbn_shared_towers_bn_head() -> TrainConfig:
    """FCOS_RT/MS_DLA_34_4x_syncbn_shared_towers_bn_head: the shared tower with SyncBN."""
    return with_head_norm(fcos_rt_ms_dla34_4x_syncbn_shared_towers(), "SyncBN")


@preset()
def fcos_tiny() -> TrainConfig:
    """CPU recipe for training from scratch on the synthetic shapes (demo and benchmark).

    Narrow ResNet-18 (widths 32..256) with trainable BN, 64-channel FPN P3-P5, two 64-channel BN conv layers per
    tower, 256-320 px inputs, AdamW with a short warmup and a step decay at 75% / 92% of the budget. Trains in
    channels-last memory format with bf16 autocast (fp32 on CPUs without bf16 instructions): 1.78-1.95x the
    images per second of fp32 channels-first on a 2-core avx512_bf16 CPU, at the same AP per image seen
    (docs/benchmarks/training.md).
    """
    model = FCOSDetectorConfig(
        backbone=BackboneConfig(
            depth=18, norm="BN", freeze_at=0, stride_in_1x1=False, stem_out_channels=32, res2_out_channels=32
        ),
        fpn=FPNConfig(out_channels=64, top_levels=0),
        fcos=FCOSConfig(
            num_classes=6,
            strides=(8, 16, 32),
            sizes_of_interest=(64, 128),
            norm="BN",
            num_cls_convs=2,
            num_box_convs=2,
        ),
        input_format="RGB",
        pixel_mean=(123.675, 116.28, 103.53),
        pixel_std=(58.395, 57.12, 57.375),
    )
    data = DataConfig(
        min_size_train=(224, 256, 288),
        max_size_train=384,
        min_size_test=256,
        max_size_test=384,
        num_workers=1,
    )
    solver = SolverConfig(
        optimizer="adamw",
        base_lr=2e-3,
        weight_decay=0.05,
        ims_per_batch=8,
        max_iter=3000,
        steps=(2250, 2760),
        warmup_iters=100,
        warmup_factor=0.01,
        clip_grad_norm=10.0,
        checkpoint_period=500,
        eval_period=0,
        channels_last=True,
        amp=True,
    )
    return TrainConfig(model=model, data=data, solver=solver)


@preset()
def fcos_tiny_test() -> TrainConfig:
    """Smallest config for tests: a few iterations in seconds."""
    c = fcos_tiny()
    model = replace(
        c.model,
        backbone=replace(c.model.backbone, stem_out_channels=8, res2_out_channels=8),
        fpn=replace(c.model.fpn, out_channels=16),
        fcos=replace(c.model.fcos, num_cls_convs=1, num_box_convs=1, norm="GN"),
    )
    data = replace(
        c.data,
        min_size_train=(96, 128),
        max_size_train=160,
        min_size_test=128,
        max_size_test=160,
        num_workers=0,
    )
    solver = replace(
        c.solver, ims_per_batch=2, max_iter=4, steps=(3,), warmup_iters=2, checkpoint_period=2, amp=False
    )  # fp32: the tests' numbers do not depend on the CPU's bf16 instructions
    return replace(c, model=model, data=data, solver=solver)
