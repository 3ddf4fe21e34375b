"""BlendMask presets: AdelaiDet ``configs/BlendMask/`` (COCO, real-time, DLA-34, person, panoptic), the paper's
ablation model and the CPU recipes."""

from __future__ import annotations

from dataclasses import fields, replace

from ..config import BlendMaskConfig, BlendMaskHeadConfig, PanopticHeadConfig, TrainConfig
from .fcos import (
    MS_TRAIN,
    fcos_r50_1x,
    fcos_tiny,
    fcos_tiny_test,
    on_dla34,
    real_time,
    rt_sizes,
    with_head_norm,
    with_shared_towers,
)
from .registry import preset

SRC = "AdelaiDet configs/BlendMask/"


def with_blendmask(c: TrainConfig, head: BlendMaskHeadConfig) -> TrainConfig:
    """An FCOS run config turned into BlendMask's: same detector plus ``head``, Base-BlendMask's FCOS changes
    (no per-level scales, THRESH_WITH_CTR) and instance masks in the targets."""
    detector = {f.name: getattr(c.model, f.name) for f in fields(c.model) if f.name != "arch"}
    model = BlendMaskConfig(**detector, blendmask=head)
    model = replace(model, fcos=replace(model.fcos, use_scale=False, thresh_with_ctr=True))
    return replace(c, model=model, data=replace(c.data, with_masks=True, with_sem_seg=head.basis_loss_on))


@preset(SRC + "R_50_1x.yaml", "box AP 39.9, mask AP 35.8")
def blendmask_r50_1x() -> TrainConfig:
    """AdelaiDet BlendMask/R_50_1x: FCOS without scales, THRESH_WITH_CTR, ProtoNet bases (SyncBN -> BN on one
    process), semantic loss 0.3, short sides 640-800 step 32, 90k iterations at batch 16."""
    c = with_blendmask(fcos_r50_1x(), BlendMaskHeadConfig())
    return replace(c, data=replace(c.data, min_size_train=MS_TRAIN))


@preset(SRC + "R_50_3x.yaml", "box AP 42.7, mask AP 37.8")
def blendmask_r50_3x() -> TrainConfig:
    """BlendMask/R_50_3x: 270k iterations, steps 210k / 250k."""
    c = blendmask_r50_1x()
    return replace(c, solver=replace(c.solver, max_iter=270000, steps=(210000, 250000)))


@preset(SRC + "R_101_3x.yaml", "box AP 44.8, mask AP 39.5")
def blendmask_r101_3x() -> TrainConfig:
    """BlendMask/R_101_3x."""
    c = blendmask_r50_3x()
    return replace(c, model=replace(c.model, backbone=replace(c.model.backbone, depth=101)))


@preset(SRC + "R_101_dcni3_5x.yaml", "box AP 46.8, mask AP 41.1")
def blendmask_r101_dcni3_5x() -> TrainConfig:
    """BlendMask/R_101_dcni3_5x: DCNv2 in every 3rd block of res3-res5, short side 640-864 (range), max 1440,
    400k iterations (280k, 360k), AdelaiDet's RandomCropWithInstance (INPUT.CROP: 0.9-1.0 of each side, the
    window on a random box's centre, instances may be cut)."""
    c = with_dcni3(blendmask_r101_3x(), (640, 864), 1440)
    return replace(c, solver=replace(c.solver, max_iter=400000, steps=(280000, 360000)))


def with_dcni3(c: TrainConfig, min_size_train: tuple[int, int], max_size_train: int) -> TrainConfig:
    """What every ``*_dcni3_5x`` config adds: DCNv2 in every 3rd block of res3-res5, the short side drawn from the
    ``min_size_train`` range, and AdelaiDet's INPUT.CROP (relative_range 0.9, instances may be cut)."""
    bb = replace(
        c.model.backbone, deform_on_per_stage=(False, True, True, True), deform_modulated=True, deform_interval=3
    )
    data = replace(
        c.data,
        min_size_train=min_size_train,
        min_size_train_sampling="range",
        max_size_train=max_size_train,
        crop_type="relative_range",
    )
    return replace(c, model=replace(c.model, backbone=bb), data=data)


@preset(SRC + "550_R_50_3x.yaml", "box AP 38.7, mask AP 34.5")
def blendmask_550_r50_3x() -> TrainConfig:
    """BlendMask/550_R_50_3x: P3-P6, one shared tower of 3 convs, 2 basis convs, 440-550 px (max 916)."""
    c = blendmask_r50_3x()
    model = replace(
        c.model,
        fpn=replace(c.model.fpn, top_levels=1),
        fcos=replace(
            c.model.fcos,
            strides=(8, 16, 32, 64),
            sizes_of_interest=(64, 128, 256),
            num_share_convs=3,
            num_cls_convs=0,
            num_box_convs=0,
        ),
        blendmask=replace(c.model.blendmask, basis_num_convs=2),
    )
    data = replace(
        c.data, min_size_train=tuple(range(440, 551, 22)), max_size_train=916, min_size_test=550, max_size_test=916
    )
    return replace(c, model=model, data=data)


@preset(SRC + "550_R_50_1x.yaml")
def blendmask_550_r50_1x() -> TrainConfig:
    """BlendMask/550_R_50_1x: Base-550 (P3-P6, one shared tower of 3, 2 basis convs, 440-550 px) for 90k."""
    c = blendmask_550_r50_3x()
    return replace(c, solver=blendmask_r50_1x().solver)


@preset(SRC + "550_R_50_dcni3_5x.yaml")
def blendmask_550_r50_dcni3_5x() -> TrainConfig:
    """BlendMask/550_R_50_dcni3_5x: DCNv2 every 3rd block of res3-res5, short side 440-594 (range), max 990,
    270k (210k, 250k), with the crop of blendmask_r101_dcni3_5x."""
    return with_dcni3(blendmask_550_r50_3x(), (440, 594), 990)


def rt_backbone(c: TrainConfig) -> TrainConfig:
    """R-50 with SyncBN, nothing frozen (FREEZE_AT -1), as every BlendMask RT config."""
    bb = replace(c.model.backbone, norm="SyncBN", freeze_at=0)
    return replace(c, model=replace(c.model, backbone=bb))


@preset(SRC + "RT_R_50_4x.yaml", "box AP 40.1, mask AP 34.6")
def blendmask_rt_r50_4x() -> TrainConfig:
    """BlendMask/RT_R_50_4x: Base-550's head (P3-P6, shared tower of 3, 2 basis convs) with the RT sizes
    (256-608 px, test 512 / 736) and a SyncBN R-50, 360k (300k, 340k)."""
    return rt_backbone(rt_sizes(blendmask_550_r50_1x()))


@preset(SRC + "RT_R_50_4x-BN-head.yaml")
def blendmask_rt_r50_4x_bn_head() -> TrainConfig:
    """BlendMask/RT_R_50_4x-BN-head: RT_R_50_4x with SyncBN in the shared tower."""
    return with_head_norm(blendmask_rt_r50_4x(), "SyncBN")


@preset(SRC + "RT_R_50_syncbn_4x.yaml")
def blendmask_rt_r50_syncbn_4x() -> TrainConfig:
    """BlendMask/RT_R_50_syncbn_4x: Base-RT (P3-P5, 4 + 4 GN tower convs, 3 basis convs) on a SyncBN R-50."""
    return rt_backbone(real_time(blendmask_r50_1x()))


@preset(SRC + "RT_R_50_4x_syncbn_shtw.yaml")
def blendmask_rt_r50_4x_syncbn_shtw() -> TrainConfig:
    """BlendMask/RT_R_50_4x_syncbn_shtw: Base-RT with one shared tower of 3 convs and 2 basis convs."""
    c = blendmask_rt_r50_syncbn_4x()
    c = with_shared_towers(c, 3)
    return replace(c, model=replace(c.model, blendmask=replace(c.model.blendmask, basis_num_convs=2)))


@preset(SRC + "RT_R_50_4x_bn-head_syncbn_shtw.yaml")
def blendmask_rt_r50_4x_bn_head_syncbn_shtw() -> TrainConfig:
    """BlendMask/RT_R_50_4x_bn-head_syncbn_shtw: the shared tower with SyncBN."""
    return with_head_norm(blendmask_rt_r50_4x_syncbn_shtw(), "SyncBN")


@preset(SRC + "DLA_34_syncbn_4x.yaml", "box AP 40.9, mask AP 35.2")
def blendmask_dla34_syncbn_4x() -> TrainConfig:
    """BlendMask/DLA_34_syncbn_4x: DLA-34 (SyncBN, ImageNet weights) into an FPN on level3-level5, Base-BlendMask's
    head on P3-P5 with the RT sizes and schedule."""
    return on_dla34(real_time(blendmask_r50_1x()))


@preset(SRC + "Person/R_50_1x.yaml")
def blendmask_person_r50_1x() -> TrainConfig:
    """BlendMask/Person/R_50_1x: one class (FCOS and the basis module's semantic head), the R_50_1x schedule; the
    reference starts from the COCO R_50_3x checkpoint (``--init-weights``)."""
    c = blendmask_r50_1x()
    return replace(c, model=replace(c.model, fcos=replace(c.model.fcos, num_classes=1)))


@preset("the BlendMask paper, Tables 1-7")
def blendmask_ablation_r50_1x(
    R: int = 28,
    K: int = 4,
    M: int = 4,
    top_interp: str = "nearest",
    bottom_in: tuple[str, ...] = ("res3", "res5"),
    bottom_module: str = "deeplab",
    blender: str = "blend",
    bottom_sampling: str = "bilinear",
    width: int = 128,
    semantic: bool = False,
) -> TrainConfig:
    """The paper's ablation model (Tables 1-7) as parameters; the defaults are Table 1's "28 4 4": DeepLabV3+ of
    width 128 on C3, C5 (bases stride 8), nearest top interpolation, RoIAlign bottom sampling, no semantic loss,
    R-50 1x schedule at short side 800. Rows: ``M=1`` weighted-sum, ``blender="assembler", K=16`` FCIS analogue,
    ``bottom_sampling="nearest"`` Table 6, ``bottom_in=("p3", "p5")`` Table 4, ``("p2", "p5")`` the "+s/4" row,
    ``bottom_module="protonet", bottom_in=("p3",)`` Proto-P3 and ``("p3", "p4", "p5")`` Proto-FPN (Table 7).
    From the command line the same rows are ``model.blendmask.<field>=...`` overrides."""
    first = bottom_in[0]
    level = int(first[3:] if first.startswith("res") else first[1:])
    head = BlendMaskHeadConfig(
        num_bases=K,
        attn_size=M,
        bottom_resolution=R,
        top_interp=top_interp,
        bottom_sampling=bottom_sampling,
        blender=blender,
        bottom_module=bottom_module,
        bottom_in_features=tuple(bottom_in),
        bases_stride=2**level // (2 if bottom_module == "protonet" else 1),
        basis_convs_dim=width,
        basis_loss_on=semantic,
    )
    c = with_blendmask(fcos_r50_1x(), head)
    if "p2" in bottom_in:
        c = replace(c, model=replace(c.model, fpn=replace(c.model.fpn, in_features=("res2", "res3", "res4", "res5"))))
    return c


@preset()
def blendmask_tiny() -> TrainConfig:
    """fcos_tiny + BlendMask (K=4, M=7, R=28, 32-channel BN ProtoNet on P3-P5, semantic loss): the CPU recipe."""
    head = BlendMaskHeadConfig(attn_size=7, bottom_resolution=28, basis_convs_dim=32, basis_norm="BN")
    return with_blendmask(fcos_tiny(), head)


@preset()
def blendmask_tiny_test() -> TrainConfig:
    """Smallest BlendMask for tests."""
    head = replace(
        blendmask_tiny().model.blendmask, basis_convs_dim=8, basis_num_convs=1, attn_size=4, bottom_resolution=16
    )
    return with_blendmask(fcos_tiny_test(), head)


def with_panoptic(c: TrainConfig, head: PanopticHeadConfig | None = None) -> TrainConfig:
    """A BlendMask run config turned into panoptic BlendMask's (Base-Panoptic.yaml): res2 into the FPN (P2 for the
    semantic branch; FCOS and the bases keep their levels), the semantic branch and combine of ``head`` (default:
    the reference's values), panoptic targets in the data."""
    head = replace(head or PanopticHeadConfig(), enabled=True)
    fpn = replace(c.model.fpn, in_features=("res2", "res3", "res4", "res5"))
    model = replace(c.model, fpn=fpn, panoptic=head)
    return replace(c, model=model, data=replace(c.data, with_panoptic=True))


@preset(SRC + "Panoptic/R_50_1x.yaml")
def blendmask_panoptic_r50_1x() -> TrainConfig:
    """AdelaiDet BlendMask/Panoptic/R_50_1x: BlendMask R_50_1x + Panoptic FPN's semantic branch on P2-P5 (128 wide,
    GN, loss 0.5), combine with instances >= 0.45, overlap 0.4, stuff >= 4096 px; COCO panoptic data."""
    return with_panoptic(blendmask_r50_1x())


@preset(SRC + "Panoptic/R_50_3x.yaml", "PQ 42.5 (things 49.5, stuff 32.0)")
def blendmask_panoptic_r50_3x() -> TrainConfig:
    """BlendMask/Panoptic/R_50_3x: 270k iterations (210k, 250k)."""
    return with_panoptic(blendmask_r50_3x())


@preset(SRC + "Panoptic/R_101_3x.yaml", "PQ 44.3 (things 51.6, stuff 33.2)")
def blendmask_panoptic_r101_3x() -> TrainConfig:
    """BlendMask/Panoptic/R_101_3x."""
    return with_panoptic(blendmask_r101_3x())


@preset(SRC + "Panoptic/R_50_dcni3_5x.yaml")
def blendmask_panoptic_r50_dcni3_5x() -> TrainConfig:
    """BlendMask/Panoptic/R_50_dcni3_5x: DCNv2 every 3rd block of res3-res5, short side 640-864 (range), max 1440,
    400k iterations (280k, 360k), with the crop of blendmask_r101_dcni3_5x."""
    c = blendmask_r101_dcni3_5x()
    return with_panoptic(replace(c, model=replace(c.model, backbone=replace(c.model.backbone, depth=50))))


@preset(SRC + "Panoptic/R_101_dcni3_5x.yaml", "PQ 46.0 (things 52.9, stuff 35.5)")
def blendmask_panoptic_r101_dcni3_5x() -> TrainConfig:
    """BlendMask/Panoptic/R_101_dcni3_5x: as R_50_dcni3_5x with R-101 and max 1333."""
    c = blendmask_r101_dcni3_5x()
    return with_panoptic(replace(c, data=replace(c.data, max_size_train=1333)))


@preset()
def blendmask_panoptic_tiny() -> TrainConfig:
    """blendmask_tiny + a 32-wide GN semantic branch on P2-P5 (res2 into the FPN): the CPU recipe for the
    synthetic panoptic data (``blendseg data synth --panoptic``). The stuff area limit is scaled with the image
    area (256-320 px vs COCO's ~480 x 640: 4096 -> 1024 pixels); the other combine values are the reference's."""
    c = blendmask_tiny()
    return with_panoptic(c, PanopticHeadConfig(convs_dim=32, stuff_area_limit=1024))


@preset()
def blendmask_panoptic_tiny_test() -> TrainConfig:
    """Smallest panoptic BlendMask for tests."""
    c = blendmask_tiny_test()
    return with_panoptic(c, PanopticHeadConfig(convs_dim=16, stuff_area_limit=64))
