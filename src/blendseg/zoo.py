"""The only registry: preset names -> config functions, and model architectures -> builders.

Presets are named after the reference configs (``fcos_r50_1x`` = AdelaiDet ``FCOS-Detection/R_50_1x``);
variants are ``dataclasses.replace`` of a base, readable here.
"""

from __future__ import annotations

from dataclasses import fields, replace

from torch import nn

from .config import (
    BackboneConfig,
    BlendMaskConfig,
    BlendMaskHeadConfig,
    DataConfig,
    FCOSConfig,
    FCOSDetectorConfig,
    FPNConfig,
    MEInstConfig,
    MEInstHeadConfig,
    PanopticHeadConfig,
    SolverConfig,
    TrainConfig,
    YolactConfig,
    YolactHeadConfig,
)
from .modeling.blendmask import build_blendmask
from .modeling.fcos import build_fcos
from .modeling.meinst import build_meinst
from .modeling.yolact import build_yolact

MS_TRAIN = (640, 672, 704, 736, 768, 800)


def fcos_r50_1x() -> TrainConfig:
    """AdelaiDet FCOS-Detection/R_50_1x: R-50 MSRA weights, 800 px, 90k iterations at batch 16."""
    return TrainConfig(
        model=FCOSDetectorConfig(),
        data=DataConfig(min_size_train=(800,), aspect_ratio_grouping=True, mask_format="polygon"),
        solver=SolverConfig(),
    )


def fcos_ms_r50_2x() -> TrainConfig:
    """FCOS-Detection/MS_R_50_2x: multi-scale 640-800, 180k iterations."""
    c = fcos_r50_1x()
    return replace(
        c,
        data=replace(c.data, min_size_train=MS_TRAIN),
        solver=replace(c.solver, max_iter=180000, steps=(120000, 160000)),
    )


def fcos_ms_r101_2x() -> TrainConfig:
    """FCOS-Detection/MS_R_101_2x."""
    c = fcos_ms_r50_2x()
    return replace(c, model=replace(c.model, backbone=replace(c.model.backbone, depth=101)))


def fcos_rt_ms_r50_4x_bn() -> TrainConfig:
    """FCOS_RT/MS_R_50_4x_syncbn with BN (SyncBN on several processes): P3-P5, 256-608 px, 360k iterations."""
    c = fcos_r50_1x()
    model = replace(
        c.model,
        backbone=replace(c.model.backbone, norm="SyncBN", freeze_at=-1),
        fpn=replace(c.model.fpn, top_levels=0),
        fcos=replace(c.model.fcos, strides=(8, 16, 32), sizes_of_interest=(64, 128), norm="SyncBN"),
    )
    data = replace(
        c.data,
        min_size_train=tuple(range(256, 609, 32)),
        max_size_train=900,
        min_size_test=512,
        max_size_test=736,
    )
    solver = replace(c.solver, max_iter=360000, steps=(300000, 340000))
    return replace(c, model=model, data=data, solver=solver)


def fcos_tiny() -> TrainConfig:
    """CPU recipe for training from scratch on the synthetic shapes (demo and benchmark).

    Narrow ResNet-18 (widths 32..256) with trainable BN, 64-channel FPN P3-P5, two 64-channel BN conv layers per
    tower, 256-320 px inputs, AdamW with a short warmup and a step decay at 75% / 92% of the budget.
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
        ),  # fmt: skip
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
        optimizer="adamw", base_lr=2e-3, weight_decay=0.05, ims_per_batch=8, max_iter=3000, steps=(2250, 2760),
        warmup_iters=100, warmup_factor=0.01, clip_grad_norm=10.0, checkpoint_period=500, eval_period=0,
    )  # fmt: skip
    return TrainConfig(model=model, data=data, solver=solver)


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
    solver = replace(c.solver, ims_per_batch=2, max_iter=4, steps=(3,), warmup_iters=2, checkpoint_period=2)
    return replace(c, model=model, data=data, solver=solver)


def with_blendmask(c: TrainConfig, head: BlendMaskHeadConfig) -> TrainConfig:
    """An FCOS run config turned into BlendMask's: same detector plus ``head``, Base-BlendMask's FCOS changes
    (no per-level scales, THRESH_WITH_CTR) and instance masks in the targets."""
    detector = {f.name: getattr(c.model, f.name) for f in fields(c.model) if f.name != "arch"}
    model = BlendMaskConfig(**detector, blendmask=head)
    model = replace(model, fcos=replace(model.fcos, use_scale=False, thresh_with_ctr=True))
    return replace(c, model=model, data=replace(c.data, with_masks=True, with_sem_seg=head.basis_loss_on))


def blendmask_r50_1x() -> TrainConfig:
    """AdelaiDet BlendMask/R_50_1x: FCOS without scales, THRESH_WITH_CTR, ProtoNet bases (SyncBN -> BN on one
    process), semantic loss 0.3, short sides 640-800 step 32, 90k iterations at batch 16."""
    c = with_blendmask(fcos_r50_1x(), BlendMaskHeadConfig())
    return replace(c, data=replace(c.data, min_size_train=MS_TRAIN))


def blendmask_r50_3x() -> TrainConfig:
    """BlendMask/R_50_3x: 270k iterations, steps 210k / 250k."""
    c = blendmask_r50_1x()
    return replace(c, solver=replace(c.solver, max_iter=270000, steps=(210000, 250000)))


def blendmask_r101_3x() -> TrainConfig:
    """BlendMask/R_101_3x."""
    c = blendmask_r50_3x()
    return replace(c, model=replace(c.model, backbone=replace(c.model.backbone, depth=101)))


def blendmask_r101_dcni3_5x() -> TrainConfig:
    """BlendMask/R_101_dcni3_5x: DCNv2 in every 3rd block of res3-res5, short side 640-864 (range), max 1440,
    400k iterations (280k, 360k). The reference also enables RandomCropWithInstance, not implemented yet."""
    c = blendmask_r101_3x()
    bb = replace(
        c.model.backbone, deform_on_per_stage=(False, True, True, True), deform_modulated=True, deform_interval=3
    )
    data = replace(c.data, min_size_train=(640, 864), min_size_train_sampling="range", max_size_train=1440)
    solver = replace(c.solver, max_iter=400000, steps=(280000, 360000))
    return replace(c, model=replace(c.model, backbone=bb), data=data, solver=solver)


def blendmask_550_r50_3x() -> TrainConfig:
    """BlendMask/550_R_50_3x: P3-P6, one shared tower of 3 convs, 2 basis convs, 440-550 px (max 916)."""
    c = blendmask_r50_3x()
    model = replace(
        c.model,
        fpn=replace(c.model.fpn, top_levels=1),
        fcos=replace(c.model.fcos, strides=(8, 16, 32, 64), sizes_of_interest=(64, 128, 256), num_share_convs=3,
                     num_cls_convs=0, num_box_convs=0),
        blendmask=replace(c.model.blendmask, basis_num_convs=2),
    )  # fmt: skip
    data = replace(c.data, min_size_train=tuple(range(440, 551, 22)), max_size_train=916, min_size_test=550,
                   max_size_test=916)  # fmt: skip
    return replace(c, model=model, data=data)


def blendmask_rt_r50_4x_bn_shtw() -> TrainConfig:
    """BlendMask/RT_R_50_4x_syncbn_shtw with BN (SyncBN when several processes): P3-P5, R-50 BN unfrozen, shared
    tower of 3, 2 basis convs, 256-608 px (max 900), test 512 / 736, 360k iterations (300k, 340k)."""
    c = blendmask_r50_1x()
    model = replace(
        c.model,
        backbone=replace(c.model.backbone, norm="SyncBN", freeze_at=0),
        fpn=replace(c.model.fpn, top_levels=0),
        fcos=replace(c.model.fcos, strides=(8, 16, 32), sizes_of_interest=(64, 128), num_share_convs=3,
                     num_cls_convs=0, num_box_convs=0),
        blendmask=replace(c.model.blendmask, basis_num_convs=2),
    )  # fmt: skip
    data = replace(c.data, min_size_train=tuple(range(256, 609, 32)), max_size_train=900, min_size_test=512,
                   max_size_test=736)  # fmt: skip
    return replace(c, model=model, data=data, solver=replace(c.solver, max_iter=360000, steps=(300000, 340000)))


def blendmask_person_r50_3x() -> TrainConfig:
    """BlendMask/Person: one class, R_50_3x settings (the reference starts from the COCO R_50_3x checkpoint)."""
    c = blendmask_r50_3x()
    return replace(c, model=replace(c.model, fcos=replace(c.model.fcos, num_classes=1)))


def blendmask_ablation_r50_1x(
    R: int = 28, K: int = 4, M: int = 4, top_interp: str = "nearest", bottom_in: tuple[str, ...] = ("res3", "res5"),
    bottom_module: str = "deeplab", blender: str = "blend", bottom_sampling: str = "bilinear", width: int = 128,
    semantic: bool = False,
) -> TrainConfig:  # fmt: skip
    """The paper's ablation model (Tables 1-7) as parameters; the defaults are Table 1's "28 4 4": DeepLabV3+ of
    width 128 on C3, C5 (bases stride 8), nearest top interpolation, RoIAlign bottom sampling, no semantic loss,
    R-50 1x schedule at short side 800. Rows: ``M=1`` weighted-sum, ``blender="assembler", K=16`` FCIS analogue,
    ``bottom_sampling="nearest"`` Table 6, ``bottom_in=("p3", "p5")`` Table 4, ``("p2", "p5")`` the "+s/4" row,
    ``bottom_module="protonet", bottom_in=("p3",)`` Proto-P3 and ``("p3", "p4", "p5")`` Proto-FPN (Table 7).
    From the command line the same rows are ``model.blendmask.<field>=...`` overrides."""
    first = bottom_in[0]
    level = int(first[3:] if first.startswith("res") else first[1:])
    head = BlendMaskHeadConfig(
        num_bases=K, attn_size=M, bottom_resolution=R, top_interp=top_interp, bottom_sampling=bottom_sampling,
        blender=blender, bottom_module=bottom_module, bottom_in_features=tuple(bottom_in),
        bases_stride=2**level // (2 if bottom_module == "protonet" else 1), basis_convs_dim=width,
        basis_loss_on=semantic,
    )  # fmt: skip
    c = with_blendmask(fcos_r50_1x(), head)
    if "p2" in bottom_in:
        c = replace(c, model=replace(c.model, fpn=replace(c.model.fpn, in_features=("res2", "res3", "res4", "res5"))))
    return c


def blendmask_tiny() -> TrainConfig:
    """fcos_tiny + BlendMask (K=4, M=7, R=28, 32-channel BN ProtoNet on P3-P5, semantic loss): the CPU recipe."""
    head = BlendMaskHeadConfig(attn_size=7, bottom_resolution=28, basis_convs_dim=32, basis_norm="BN")
    return with_blendmask(fcos_tiny(), head)


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


def blendmask_panoptic_r50_1x() -> TrainConfig:
    """AdelaiDet BlendMask/Panoptic/R_50_1x: BlendMask R_50_1x + Panoptic FPN's semantic branch on P2-P5 (128 wide,
    GN, loss 0.5), combine with instances >= 0.45, overlap 0.4, stuff >= 4096 px; COCO panoptic data."""
    return with_panoptic(blendmask_r50_1x())


def blendmask_panoptic_r50_3x() -> TrainConfig:
    """BlendMask/Panoptic/R_50_3x: 270k iterations (210k, 250k). Reference PQ 42.5 (things 49.5, stuff 32.0)."""
    return with_panoptic(blendmask_r50_3x())


def blendmask_panoptic_r101_3x() -> TrainConfig:
    """BlendMask/Panoptic/R_101_3x. Reference PQ 44.3 (things 51.6, stuff 33.2)."""
    return with_panoptic(blendmask_r101_3x())


def blendmask_panoptic_r50_dcni3_5x() -> TrainConfig:
    """BlendMask/Panoptic/R_50_dcni3_5x: DCNv2 every 3rd block of res3-res5, short side 640-864 (range), max 1440,
    400k iterations (280k, 360k); the reference's crop is not implemented (as blendmask_r101_dcni3_5x)."""
    c = blendmask_r101_dcni3_5x()
    return with_panoptic(replace(c, model=replace(c.model, backbone=replace(c.model.backbone, depth=50))))


def blendmask_panoptic_r101_dcni3_5x() -> TrainConfig:
    """BlendMask/Panoptic/R_101_dcni3_5x: as R_50_dcni3_5x with R-101 and max 1333. Reference PQ 46.0 (things
    52.9, stuff 35.5)."""
    c = blendmask_r101_dcni3_5x()
    return with_panoptic(replace(c, data=replace(c.data, max_size_train=1333)))


def blendmask_panoptic_tiny() -> TrainConfig:
    """blendmask_tiny + a 32-wide GN semantic branch on P2-P5 (res2 into the FPN): the CPU recipe for the
    synthetic panoptic data (``blendseg data synth --panoptic``). The stuff area limit is scaled with the image
    area (256-320 px vs COCO's ~480 x 640: 4096 -> 1024 pixels); the other combine values are the reference's."""
    c = blendmask_tiny()
    return with_panoptic(c, PanopticHeadConfig(convs_dim=32, stuff_area_limit=1024))


def blendmask_panoptic_tiny_test() -> TrainConfig:
    """Smallest panoptic BlendMask for tests."""
    c = blendmask_tiny_test()
    return with_panoptic(c, PanopticHeadConfig(convs_dim=16, stuff_area_limit=64))


def with_meinst(c: TrainConfig, head: MEInstHeadConfig) -> TrainConfig:
    """An FCOS run config turned into MEInst's: same detector (MEInst keeps FCOS's scales and thresholds) plus
    the mask branch and instance masks in the targets."""
    detector = {f.name: getattr(c.model, f.name) for f in fields(c.model) if f.name != "arch"}
    return replace(c, model=MEInstConfig(**detector, meinst=head), data=replace(c.data, with_masks=True))


def meinst_r50_1x_none() -> TrainConfig:
    """AdelaiDet MEInst_R_50_1x_none: no DCN, 800 px, 90k (60k, 80k), constant warmup x0.3333 for 500 it."""
    c = with_meinst(fcos_r50_1x(), MEInstHeadConfig())
    return replace(c, solver=replace(c.solver, warmup_method="constant", warmup_factor=0.3333, warmup_iters=500))


def meinst_r50_1x() -> TrainConfig:
    """MEInst_R_50_1x: DCNv1 as the last conv of the class, box and mask towers (the paper's Table 5 "DC")."""
    c = meinst_r50_1x_none()
    return replace(c, model=replace(c.model, fcos=replace(c.model.fcos, use_deformable=True, deform_v1=True)))


def meinst_r50_3x() -> TrainConfig:
    """MEInst_R_50_3x: DCNv1, 640-800 px step 32, 270k iterations (180k, 240k), linear warmup 1000 it."""
    c = meinst_r50_1x()
    solver = replace(
        c.solver, max_iter=270000, steps=(180000, 240000), warmup_method="linear", warmup_factor=0.001,
        warmup_iters=1000,
    )  # fmt: skip
    return replace(c, data=replace(c.data, min_size_train=MS_TRAIN), solver=solver)


def meinst_r50_3x_512() -> TrainConfig:
    """MEInst_R_50_3x_512: 384-544 px step 32, test 512 (max 1333)."""
    c = meinst_r50_3x()
    return replace(c, data=replace(c.data, min_size_train=tuple(range(384, 545, 32)), min_size_test=512))


def meinst_tiny() -> TrainConfig:
    """fcos_tiny + MEInst (60-d PCA fitted on the training masks at the start, 2-conv BN mask tower)."""
    c = fcos_tiny()
    return with_meinst(c, MEInstHeadConfig(num_mask_convs=2))


def meinst_tiny_test() -> TrainConfig:
    """Smallest MEInst for tests (a 12-d code)."""
    return with_meinst(fcos_tiny_test(), MEInstHeadConfig(num_mask_convs=1, dim_mask=12))


def _octave_scales(bases: tuple[float, ...]) -> tuple[tuple[float, ...], ...]:
    """YOLACT++'s anchors: each level's base x {1, 2^(1/3), 2^(2/3)}."""
    return tuple(tuple(b * 2 ** (i / 3) for i in range(3)) for b in bases)


def yolact_base() -> TrainConfig:
    """Official yolact_base (YOLACT-550, R-101-FPN): square anchors (v1 bug), 550 px squash with SSD augmentation,
    SGD lr 1e-3 (warmup from 1e-4 over 500 it), wd 5e-4 incl. BN, batch 8, 800k iterations, steps 280k/600k/700k/750k.
    ImageNet weights: torchvision's ResNet-101 (the official uses its own resnet101_reducedfc.pth)."""
    model = YolactConfig(backbone=replace(YolactConfig().backbone, weights="torchvision"))
    data = DataConfig(
        square_size=550, augment="ssd", with_masks=True, with_crowd_boxes=True, min_size_train=(550,),
        max_size_train=550, min_size_test=550, max_size_test=550,
    )  # fmt: skip
    solver = SolverConfig(
        base_lr=1e-3, momentum=0.9, weight_decay=5e-4, weight_decay_norm=5e-4, ims_per_batch=8, max_iter=800000,
        steps=(280000, 600000, 700000, 750000), warmup_iters=500, warmup_factor=0.1,
    )  # fmt: skip
    return TrainConfig(model=model, data=data, solver=solver)


def yolact_resnet50() -> TrainConfig:
    """Official yolact_resnet50 (YOLACT-550, R-50-FPN)."""
    c = yolact_base()
    return replace(c, model=replace(c.model, backbone=replace(c.model.backbone, depth=50)))


def _yolact_size(c: TrainConfig, size: int, masks_to_train: int) -> TrainConfig:
    scales = tuple((int(s[0] / 550 * size),) for s in c.model.yolact.scales)
    head = replace(c.model.yolact, scales=scales, masks_to_train=masks_to_train)
    sq = dict(square_size=size, min_size_train=(size,), max_size_train=size, min_size_test=size, max_size_test=size)
    return replace(c, model=replace(c.model, yolact=head), data=replace(c.data, **sq))


def yolact_im400() -> TrainConfig:
    """Official yolact_im400: 400 px, anchor scales int(s * 400 / 550)."""
    return _yolact_size(yolact_base(), 400, 100)


def yolact_im700() -> TrainConfig:
    """Official yolact_im700: 700 px, anchor scales int(s * 700 / 550), 300 masks per image."""
    return _yolact_size(yolact_base(), 700, 300)


def yolact_plus_base() -> TrainConfig:
    """Official yolact_plus_base (YOLACT++ R-101): DCNv2 (with bias) in C3-C5 every 3rd block, 3 scales x 3
    ratios of true rectangles, fast mask re-scoring (loss x 25, <= 25-pixel masks skipped)."""
    c = yolact_base()
    bb = replace(
        c.model.backbone, deform_on_per_stage=(False, True, True, True), deform_modulated=True, deform_interval=3,
        deform_bias=True,
    )  # fmt: skip
    head = replace(c.model.yolact, scales=_octave_scales((24, 48, 96, 192, 384)), square_anchors=False, maskiou=True)
    return replace(c, model=replace(c.model, backbone=bb, yolact=head))


def yolact_plus_resnet50() -> TrainConfig:
    """Official yolact_plus_resnet50: R-50 with DCN in *every* C3-C5 block (interval 1, yolact.md §1.2)."""
    c = yolact_plus_base()
    return replace(c, model=replace(c.model, backbone=replace(c.model.backbone, depth=50, deform_interval=1)))


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
        t.data, square_size=256, augment="flip", with_masks=True, with_crowd_boxes=True, min_size_train=(256,),
        max_size_train=256, min_size_test=256, max_size_test=256,
    )  # fmt: skip
    return TrainConfig(model=model, data=data, solver=t.solver)


def yolact_tiny_test() -> TrainConfig:
    """Smallest YOLACT for tests."""
    c = yolact_tiny()
    bb = replace(c.model.backbone, stem_out_channels=8, res2_out_channels=8)
    head = replace(c.model.yolact, proto_dim=8, num_prototypes=8)
    model = replace(c.model, backbone=bb, fpn=replace(c.model.fpn, out_channels=16), yolact=head)
    data = replace(c.data, square_size=128, num_workers=0)
    solver = replace(c.solver, ims_per_batch=2, max_iter=4, steps=(3,), warmup_iters=2, checkpoint_period=2)
    return replace(c, model=model, data=data, solver=solver)


PRESETS = {
    "fcos_r50_1x": fcos_r50_1x,
    "fcos_ms_r50_2x": fcos_ms_r50_2x,
    "fcos_ms_r101_2x": fcos_ms_r101_2x,
    "fcos_rt_ms_r50_4x_bn": fcos_rt_ms_r50_4x_bn,
    "fcos_tiny": fcos_tiny,
    "fcos_tiny_test": fcos_tiny_test,
    "blendmask_r50_1x": blendmask_r50_1x,
    "blendmask_r50_3x": blendmask_r50_3x,
    "blendmask_r101_3x": blendmask_r101_3x,
    "blendmask_r101_dcni3_5x": blendmask_r101_dcni3_5x,
    "blendmask_550_r50_3x": blendmask_550_r50_3x,
    "blendmask_rt_r50_4x_bn_shtw": blendmask_rt_r50_4x_bn_shtw,
    "blendmask_person_r50_3x": blendmask_person_r50_3x,
    "blendmask_ablation_r50_1x": blendmask_ablation_r50_1x,
    "blendmask_tiny": blendmask_tiny,
    "blendmask_tiny_test": blendmask_tiny_test,
    "blendmask_panoptic_r50_1x": blendmask_panoptic_r50_1x,
    "blendmask_panoptic_r50_3x": blendmask_panoptic_r50_3x,
    "blendmask_panoptic_r101_3x": blendmask_panoptic_r101_3x,
    "blendmask_panoptic_r50_dcni3_5x": blendmask_panoptic_r50_dcni3_5x,
    "blendmask_panoptic_r101_dcni3_5x": blendmask_panoptic_r101_dcni3_5x,
    "blendmask_panoptic_tiny": blendmask_panoptic_tiny,
    "blendmask_panoptic_tiny_test": blendmask_panoptic_tiny_test,
    "meinst_r50_1x_none": meinst_r50_1x_none,
    "meinst_r50_1x": meinst_r50_1x,
    "meinst_r50_3x": meinst_r50_3x,
    "meinst_r50_3x_512": meinst_r50_3x_512,
    "meinst_tiny": meinst_tiny,
    "meinst_tiny_test": meinst_tiny_test,
    "yolact_base": yolact_base,
    "yolact_resnet50": yolact_resnet50,
    "yolact_im400": yolact_im400,
    "yolact_im700": yolact_im700,
    "yolact_plus_base": yolact_plus_base,
    "yolact_plus_resnet50": yolact_plus_resnet50,
    "yolact_tiny": yolact_tiny,
    "yolact_tiny_test": yolact_tiny_test,
}

BUILDERS = {"fcos": build_fcos, "blendmask": build_blendmask, "meinst": build_meinst, "yolact": build_yolact}


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


def list_presets() -> list[str]:
    return sorted(PRESETS)


def build_model(model_cfg: FCOSDetectorConfig) -> nn.Module:
    """Build the model of a model config (dispatch on ``arch``)."""
    if model_cfg.arch not in BUILDERS:
        raise KeyError(f"unknown arch {model_cfg.arch!r}; available: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[model_cfg.arch](model_cfg)
