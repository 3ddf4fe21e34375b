"""AdelaiDet / detectron2 -> blendseg: config mapping (``_BASE_`` resolved) and state-dict key map.

Covers the backbone (ResNet, incl. deformable blocks), FPN (P2 or P3 to P5, +P6/P7), the FCOS head, BlendMask
(bases, attentions, semantic heads, incl. panoptic BlendMask's ``panoptic_module``) and MEInst (mask branch, PCA).
Keys outside these are reported as unmapped.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import Tensor

from ..config import (
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
)
from ..weights_io import read_state_dict


def load_d2_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a detectron2 YAML config, merging ``_BASE_`` files recursively (child keys win)."""
    path = Path(path)
    with open(path) as f:
        cfg = yaml.safe_load(f) or {}
    base = cfg.pop("_BASE_", None)
    if base is None:
        return cfg
    base_path = Path(base) if os.path.isabs(base) else path.parent / base
    if not base_path.exists():
        raise FileNotFoundError(f"{path}: _BASE_ {base!r} not found at {base_path}")
    return _merge(load_d2_yaml(base_path), cfg)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _get(cfg: dict[str, Any], dotted: str, default: Any) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def d2_to_train_config(d2: dict[str, Any]) -> TrainConfig:
    """Map a detectron2/AdelaiDet config dict (defaults as at AdelaiDet HEAD) to a :class:`TrainConfig`: FCOS,
    BlendMask (META_ARCHITECTURE) or MEInst (PROPOSAL_GENERATOR.NAME, its head keys under MODEL.MEInst)."""
    g = lambda k, d: _get(d2, k, d)  # noqa: E731
    meinst = g("MODEL.PROPOSAL_GENERATOR.NAME", "FCOS") == "MEInst"
    head_key = "MEInst" if meinst else "FCOS"
    backbone = _backbone(d2)
    h = f"MODEL.{head_key}."
    d = FCOSConfig()
    fcos = FCOSConfig(
        num_classes=int(g(h + "NUM_CLASSES", d.num_classes)),
        strides=tuple(int(s) for s in g(h + "FPN_STRIDES", d.strides)),
        prior_prob=float(g(h + "PRIOR_PROB", d.prior_prob)),
        inference_th=float(g(h + "INFERENCE_TH_TEST", d.inference_th)),
        pre_nms_topk=int(g(h + "PRE_NMS_TOPK_TEST", d.pre_nms_topk)),
        nms_th=float(g(h + "NMS_TH", d.nms_th)),
        post_nms_topk=int(g(h + "POST_NMS_TOPK_TEST", d.post_nms_topk)),
        norm=str(g(h + "NORM", d.norm)),
        use_scale=bool(g(h + "USE_SCALE", d.use_scale)),
        thresh_with_ctr=bool(g(h + "THRESH_WITH_CTR", d.thresh_with_ctr)),
        loss_alpha=float(g(h + "LOSS_ALPHA", d.loss_alpha)),
        loss_gamma=float(g(h + "LOSS_GAMMA", d.loss_gamma)),
        loss_normalizer_cls=str(g(h + "LOSS_NORMALIZER_CLS", d.loss_normalizer_cls)),
        loss_weight_cls=float(g(h + "LOSS_WEIGHT_CLS", d.loss_weight_cls)),
        sizes_of_interest=tuple(int(s) for s in g(h + "SIZES_OF_INTEREST", d.sizes_of_interest)),
        num_cls_convs=int(g(h + "NUM_CLS_CONVS", d.num_cls_convs)),
        num_box_convs=int(g(h + "NUM_BOX_CONVS", d.num_box_convs)),
        num_share_convs=int(g(h + "NUM_SHARE_CONVS", d.num_share_convs)),
        center_sample=bool(g(h + "CENTER_SAMPLE", d.center_sample)),
        pos_radius=float(g(h + "POS_RADIUS", d.pos_radius)),
        loc_loss_type=str(g(h + "LOC_LOSS_TYPE", d.loc_loss_type)),
        box_quality=str(g(h + "BOX_QUALITY", d.box_quality)),
        use_deformable=bool(g(h + "USE_DEFORMABLE", d.use_deformable)),
        deform_v1=meinst and str(g(h + "TYPE_DEFORMABLE", "DCNv1")) == "DCNv1",
    )
    top_levels = int(g(h + "TOP_LEVELS", 2))
    model_cls = BlendMaskConfig if g("MODEL.META_ARCHITECTURE", "") == "BlendMask" else FCOSDetectorConfig
    extra: dict[str, Any] = {}
    if model_cls is BlendMaskConfig:
        extra = {"blendmask": _blendmask_head(d2, fcos.num_classes), "panoptic": _panoptic_head(d2)}
    if meinst:
        model_cls, extra = MEInstConfig, {"meinst": _meinst_head(d2)}
    fpn_in = tuple(str(f) for f in g("MODEL.FPN.IN_FEATURES", ["res3", "res4", "res5"]))
    model = model_cls(
        **extra,
        backbone=backbone,
        fpn=FPNConfig(out_channels=int(g("MODEL.FPN.OUT_CHANNELS", 256)), top_levels=top_levels, in_features=fpn_in),
        fcos=fcos,
        input_format=str(g("INPUT.FORMAT", "BGR")),
        pixel_mean=tuple(float(x) for x in g("MODEL.PIXEL_MEAN", [103.530, 116.280, 123.675])),
        pixel_std=tuple(float(x) for x in g("MODEL.PIXEL_STD", [1.0, 1.0, 1.0])),
    )
    min_train = g("INPUT.MIN_SIZE_TRAIN", [800])
    data = DataConfig(
        min_size_train=tuple(int(x) for x in (min_train if isinstance(min_train, list) else [min_train])),
        min_size_train_sampling=str(g("INPUT.MIN_SIZE_TRAIN_SAMPLING", "choice")),
        max_size_train=int(g("INPUT.MAX_SIZE_TRAIN", 1333)),
        min_size_test=int(g("INPUT.MIN_SIZE_TEST", 800)),
        max_size_test=int(g("INPUT.MAX_SIZE_TEST", 1333)),
        hflip_train=bool(g("INPUT.HFLIP_TRAIN", True)),
        crop_type=str(g("INPUT.CROP.TYPE", "relative_range")) if bool(g("INPUT.CROP.ENABLED", False)) else "",
        crop_size=tuple(float(x) for x in g("INPUT.CROP.SIZE", [0.9, 0.9])),
        crop_instance=bool(g("INPUT.CROP.CROP_INSTANCE", True)),
        filter_empty=bool(g("DATALOADER.FILTER_EMPTY_ANNOTATIONS", True)),
        aspect_ratio_grouping=bool(g("DATALOADER.ASPECT_RATIO_GROUPING", True)),
        mask_format=str(g("INPUT.MASK_FORMAT", "polygon")),
        with_masks=bool(extra),
        with_sem_seg="blendmask" in extra and extra["blendmask"].basis_loss_on,
        with_panoptic="panoptic" in extra and extra["panoptic"].enabled,
    )
    s = "SOLVER."
    solver = SolverConfig(
        base_lr=float(g(s + "BASE_LR", 0.01)),
        momentum=float(g(s + "MOMENTUM", 0.9)),
        weight_decay=float(g(s + "WEIGHT_DECAY", 1e-4)),
        weight_decay_norm=float(g(s + "WEIGHT_DECAY_NORM", 0.0)),
        ims_per_batch=int(g(s + "IMS_PER_BATCH", 16)),
        max_iter=int(g(s + "MAX_ITER", 90000)),
        steps=tuple(int(x) for x in g(s + "STEPS", [60000, 80000])),
        gamma=float(g(s + "GAMMA", 0.1)),
        warmup_iters=int(g(s + "WARMUP_ITERS", 1000)),
        warmup_factor=float(g(s + "WARMUP_FACTOR", 0.001)),
        warmup_method=str(g(s + "WARMUP_METHOD", "linear")),
        checkpoint_period=int(g(s + "CHECKPOINT_PERIOD", 5000)),
        eval_period=int(g("TEST.EVAL_PERIOD", 0)),
    )
    return TrainConfig(model=model, data=data, solver=solver)


RESNET_BUILDERS = ("build_fcos_resnet_fpn_backbone", "build_resnet_fpn_backbone", "build_resnet_backbone")
DLA_BUILDERS = {"build_fcos_dla_fpn_backbone"}


def _backbone(d2: dict[str, Any]) -> BackboneConfig:
    """The bottom-up network of MODEL.BACKBONE.NAME: ResNet (MODEL.RESNETS) or DLA-34 (MODEL.DLA); any other
    builder is refused by name rather than read as a ResNet."""
    g = lambda k, d: _get(d2, k, d)  # noqa: E731
    name = str(g("MODEL.BACKBONE.NAME", "build_resnet_backbone"))
    if name in DLA_BUILDERS:
        body = str(g("MODEL.DLA.CONV_BODY", "DLA34"))
        if body != "DLA34":
            raise ValueError(f"MODEL.DLA.CONV_BODY {body!r} is not supported (AdelaiDet builds DLA34 only)")
        return BackboneConfig(name="dla", depth=34, norm=str(g("MODEL.DLA.NORM", "FrozenBN")), freeze_at=0)
    if name not in RESNET_BUILDERS:
        raise ValueError(
            f"MODEL.BACKBONE.NAME {name!r} is not supported: blendseg has ResNet ({', '.join(RESNET_BUILDERS)}) "
            f"and DLA-34 ({', '.join(sorted(DLA_BUILDERS))}) backbones"
        )
    r = "MODEL.RESNETS."
    return BackboneConfig(
        depth=int(g(r + "DEPTH", 50)),
        norm=str(g(r + "NORM", "FrozenBN")),
        freeze_at=int(g("MODEL.BACKBONE.FREEZE_AT", 2)),
        stride_in_1x1=bool(g(r + "STRIDE_IN_1X1", True)),
        stem_out_channels=int(g(r + "STEM_OUT_CHANNELS", 64)),
        res2_out_channels=int(g(r + "RES2_OUT_CHANNELS", 256)),
        num_groups=int(g(r + "NUM_GROUPS", 1)),
        width_per_group=int(g(r + "WIDTH_PER_GROUP", 64)),
        deform_on_per_stage=tuple(bool(x) for x in g(r + "DEFORM_ON_PER_STAGE", [False] * 4)),
        deform_modulated=bool(g(r + "DEFORM_MODULATED", False)),
        deform_interval=int(g(r + "DEFORM_INTERVAL", 1)),
    )


_RULES = [
    (re.compile(r"^backbone\.bottom_up\.(.*)$"), r"backbone.\1"),
    (re.compile(r"^backbone\.(fpn_lateral\d|fpn_output\d|top_block\.p\d)\.(.*)$"), r"fpn.\1.\2"),
    (re.compile(r"^proposal_generator\.fcos_head\.(.*)$"), r"head.\1"),
]
_DROPPED = re.compile(r"(^pixel_mean$|^pixel_std$)")


def _meinst_head(d2: dict[str, Any]) -> MEInstHeadConfig:
    m = "MODEL.MEInst."
    g = lambda k, d: _get(d2, k, d)  # noqa: E731
    if not bool(g(m + "AGNOSTIC", True)):
        raise ValueError("MEInst.AGNOSTIC False (class-specific encoding) is not implemented in the reference either")
    return MEInstHeadConfig(
        dim_mask=int(g(m + "DIM_MASK", 60)),
        mask_size=int(g(m + "MASK_SIZE", 28)),
        num_mask_convs=int(g(m + "NUM_MASK_CONVS", 4)),
        encoding="implicit" if bool(g(m + "LOSS_ON_MASK", False)) else "pca",
        whiten=bool(g(m + "WHITEN", True)),
        sigmoid=bool(g(m + "SIGMOID", True)),
        mask_pred="large_kernel" if bool(g(m + "USE_GCN_IN_MASK", False)) else "conv",
        large_kernel_size=int(g(m + "GCN_KERNEL_SIZE", 9)),
    )


def _panoptic_head(d2: dict[str, Any]) -> PanopticHeadConfig:
    """MODEL.SEM_SEG_HEAD and MODEL.PANOPTIC_FPN.COMBINE (AdelaiDet defaults: combine off, 0.5 / 0.5 / 4096)."""
    h, c = "MODEL.SEM_SEG_HEAD.", "MODEL.PANOPTIC_FPN.COMBINE."
    g = lambda k, d: _get(d2, k, d)  # noqa: E731
    return PanopticHeadConfig(
        enabled=bool(g(c + "ENABLED", False)),
        num_classes=int(g(h + "NUM_CLASSES", 54)),
        in_features=tuple(str(f) for f in g(h + "IN_FEATURES", ["p2", "p3", "p4", "p5"])),
        convs_dim=int(g(h + "CONVS_DIM", 128)),
        common_stride=int(g(h + "COMMON_STRIDE", 4)),
        norm=str(g(h + "NORM", "GN")),
        ignore_value=int(g(h + "IGNORE_VALUE", 255)),
        loss_weight=float(g(h + "LOSS_WEIGHT", 1.0)),
        instances_confidence_thresh=float(g(c + "INSTANCES_CONFIDENCE_THRESH", 0.5)),
        overlap_thresh=float(g(c + "OVERLAP_THRESH", 0.5)),
        stuff_area_limit=int(g(c + "STUFF_AREA_LIMIT", 4096)),
    )


def _blendmask_head(d2: dict[str, Any], num_classes: int) -> BlendMaskHeadConfig:
    b, m = "MODEL.BLENDMASK.", "MODEL.BASIS_MODULE."
    g = lambda k, d: _get(d2, k, d)  # noqa: E731
    if int(g(m + "NUM_CLASSES", num_classes)) != num_classes:
        raise ValueError("BASIS_MODULE.NUM_CLASSES differs from FCOS.NUM_CLASSES: blendseg has one class count")
    scales = g(b + "POOLER_SCALES", [0.25])
    return BlendMaskHeadConfig(
        num_bases=int(g(m + "NUM_BASES", 4)),
        attn_size=int(g(b + "ATTN_SIZE", 14)),
        bottom_resolution=int(g(b + "BOTTOM_RESOLUTION", 56)),
        bases_stride=int(round(1 / float(scales[0]))),
        top_interp=str(g(b + "TOP_INTERP", "bilinear")),
        bottom_in_features=tuple(str(f) for f in g(m + "IN_FEATURES", ["p3", "p4", "p5"])),
        basis_num_convs=int(g(m + "NUM_CONVS", 3)),
        basis_convs_dim=int(g(m + "CONVS_DIM", 128)),
        basis_norm=str(g(m + "NORM", "SyncBN")),
        basis_loss_on=bool(g(m + "LOSS_ON", False)),
        basis_loss_weight=float(g(m + "LOSS_WEIGHT", 0.3)),
        instance_loss_weight=float(g(b + "INSTANCE_LOSS_WEIGHT", 1.0)),
    )


def map_key(key: str, arch: str = "fcos") -> str | None:
    """blendseg name of an AdelaiDet key for a model of ``arch`` (None when dropped or not mapped)."""
    key = key.replace(".centerness.", ".ctrness.")  # tools/rename_blendmask.py for old checkpoints
    prefix = "" if arch == "fcos" else "fcos."  # BlendMask and MEInst hold the FCOS detector as ``fcos``
    for pattern, repl in _RULES:
        if pattern.match(key):
            return prefix + pattern.sub(repl, key)
    if arch == "blendmask" and key.startswith("top_layer."):
        return "fcos.head.embed_head." + key[len("top_layer.") :]
    if arch == "blendmask" and key.startswith(("basis_module.", "panoptic_module.")):
        return key
    if arch == "meinst":
        m = re.match(r"^proposal_generator\.MEInst_head\.(mask_tower|mask_pred)\.(.*)$", key)
        if m:
            return f"fcos.head.embed_head.{m.group(1)}.{m.group(2)}"
        m = re.match(r"^proposal_generator\.MEInst_head\.(.*)$", key)
        if m:
            return f"fcos.head.{m.group(1)}"
        if key.startswith("proposal_generator.mask_encoding."):
            return key[len("proposal_generator.") :]
    return None


def rename_state_dict(
    state: dict[str, Tensor], key_map: Callable[[str], str | None]
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename a reference state dict with ``key_map`` (None: not part of the model), floats as float32.
    Returns (state, unmapped keys). Shared by the AdelaiDet and the YOLACT converters."""
    out, unmapped = {}, []
    for k, v in state.items():
        new = key_map(k)
        if new is None:
            unmapped.append(k)
            continue
        v = torch.as_tensor(v)
        out[new] = v.float() if v.is_floating_point() else v
    return out, unmapped


def convert_state_dict(d2_state: dict[str, Tensor], arch: str = "fcos") -> tuple[dict[str, Tensor], list[str]]:
    """Map an AdelaiDet state dict to blendseg names, float32. Returns (state, unmapped keys)."""
    kept = {k: v for k, v in d2_state.items() if not _DROPPED.match(k)}
    return rename_state_dict(kept, lambda k: map_key(k, arch))


def convert_adelaidet(config_path: str, weights_path: str) -> tuple[TrainConfig, dict[str, Tensor], list[str]]:
    """Config + weights -> (TrainConfig, blendseg state dict, unmapped keys). Backbone weights stay random-free:
    ``backbone.weights`` is cleared since the checkpoint carries them."""
    cfg = d2_to_train_config(load_d2_yaml(config_path))
    cfg = dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, backbone=dataclasses.replace(cfg.model.backbone, weights="")),
    )
    state, unmapped = convert_state_dict(read_state_dict(weights_path), cfg.model.arch)
    return cfg, state, unmapped
