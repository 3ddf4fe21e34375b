"""MEInst presets: AdelaiDet ``configs/MEInst-InstanceSegmentation/`` and the CPU recipes."""

from __future__ import annotations

from dataclasses import fields, replace

from ..config import MEInstConfig, MEInstHeadConfig, TrainConfig
from .fcos import MS_TRAIN, fcos_r50_1x, fcos_tiny, fcos_tiny_test
from .registry import preset

SRC = "AdelaiDet configs/MEInst-InstanceSegmentation/"


def with_meinst(c: TrainConfig, head: MEInstHeadConfig) -> TrainConfig:
    """An FCOS run config turned into MEInst's: same detector (MEInst keeps FCOS's scales and thresholds) plus
    the mask branch and instance masks in the targets."""
    detector = {f.name: getattr(c.model, f.name) for f in fields(c.model) if f.name != "arch"}
    return replace(c, model=MEInstConfig(**detector, meinst=head), data=replace(c.data, with_masks=True))


@preset(SRC + "MEInst_R_50_1x_none.yaml", "box AP 39.5, mask AP 30.7")
def meinst_r50_1x_none() -> TrainConfig:
    """AdelaiDet MEInst_R_50_1x_none: no DCN, 800 px, 90k (60k, 80k), constant warmup x0.3333 for 500 it."""
    c = with_meinst(fcos_r50_1x(), MEInstHeadConfig())
    return replace(c, solver=replace(c.solver, warmup_method="constant", warmup_factor=0.3333, warmup_iters=500))


@preset(SRC + "MEInst_R_50_1x.yaml", "box AP 40.1, mask AP 31.7")
def meinst_r50_1x() -> TrainConfig:
    """MEInst_R_50_1x: DCNv1 as the last conv of the class, box and mask towers (the paper's Table 5 "DC")."""
    c = meinst_r50_1x_none()
    return replace(c, model=replace(c.model, fcos=replace(c.model.fcos, use_deformable=True, deform_v1=True)))


@preset(SRC + "MEInst_R_50_3x.yaml", "box AP 43.6, mask AP 34.5")
def meinst_r50_3x() -> TrainConfig:
    """MEInst_R_50_3x: DCNv1, 640-800 px step 32, 270k iterations (180k, 240k), linear warmup 1000 it."""
    c = meinst_r50_1x()
    solver = replace(
        c.solver,
        max_iter=270000,
        steps=(180000, 240000),
        warmup_method="linear",
        warmup_factor=0.001,
        warmup_iters=1000,
    )
    return replace(c, data=replace(c.data, min_size_train=MS_TRAIN), solver=solver)


@preset(SRC + "MEInst_R_50_3x_512.yaml", "box AP 40.8, mask AP 32.2")
def meinst_r50_3x_512() -> TrainConfig:
    """MEInst_R_50_3x_512: 384-544 px step 32, test 512 (max 1333)."""
    c = meinst_r50_3x()
    return replace(c, data=replace(c.data, min_size_train=tuple(range(384, 545, 32)), min_size_test=512))


@preset()
def meinst_tiny() -> TrainConfig:
    """fcos_tiny + MEInst (60-d PCA fitted on the training masks at the start, 2-conv BN mask tower)."""
    c = fcos_tiny()
    return with_meinst(c, MEInstHeadConfig(num_mask_convs=2))


@preset()
def meinst_tiny_test() -> TrainConfig:
    """Smallest MEInst for tests (a 12-d code)."""
    return with_meinst(fcos_tiny_test(), MEInstHeadConfig(num_mask_convs=1, dim_mask=12))
