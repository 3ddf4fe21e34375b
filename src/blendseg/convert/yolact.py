"""Official YOLACT / YOLACT++ (dbolya/yolact) -> blendseg: config dict mapping and state-dict key map.

The official config is a Python object; the reference fixtures store it as JSON (``config.json``, key ``config``),
and the released checkpoints name their config (``yolact_plus_resnet50_54_800000.pth`` -> preset
``yolact_plus_resnet50``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from ..config import BackboneConfig, DataConfig, FPNConfig, SolverConfig, TrainConfig, YolactConfig, YolactHeadConfig
from ..modeling.core.darknet import DARKNET_BLOCKS
from ..weights_io import read_state_dict
from .adelaidet import rename_state_dict

# official BGR constants (yolact.md §1.1), given to the model in RGB order
MEANS_BGR, STD_BGR = (103.94, 116.78, 123.68), (57.38, 57.12, 58.40)
DEPTHS = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}


def preset_from_filename(path: str) -> str:
    """``yolact_plus_resnet50_54_800000.pth`` -> ``yolact_plus_resnet50`` (the official ``<config>_<epoch>_<iter>``)."""
    m = re.match(r"^(.*?)_\d+_\d+$", Path(path).stem)
    if not m:
        raise ValueError(f"{path}: cannot infer the config from the name (expected <config>_<epoch>_<iter>.pth)")
    return m.group(1)


def _backbone(bb: dict[str, Any]) -> BackboneConfig:
    """ResNetBackbone (its layers and DCN arguments) or DarkNetBackbone, reading C3-C5 (``selected_layers``)."""
    kind = str(bb.get("type", "backbone.ResNetBackbone")).rsplit(".", 1)[-1]
    args = bb["args"]
    blocks = tuple(int(b) for b in args[0])
    if kind == "DarkNetBackbone":
        if bb.get("selected_layers", [2, 3, 4]) != [2, 3, 4]:
            raise ValueError(f"backbone.selected_layers {bb['selected_layers']}: only C3-C5 are supported")
        custom = blocks != DARKNET_BLOCKS[53]
        return BackboneConfig(name="darknet", depth=53, norm="BN", freeze_at=0, blocks_per_stage=blocks * custom)
    if kind != "ResNetBackbone":
        raise ValueError(f"backbone type {bb.get('type')!r} is not supported (ResNetBackbone, DarkNetBackbone)")
    dcn = tuple(int(b) for b in args[1]) if len(args) > 1 else (0, 0, 0, 0)
    interval = int(args[2]) if len(args) > 2 else 1
    for n, d in zip(blocks, dcn):
        if d not in (0, n):
            raise ValueError(f"backbone dcn_layers {dcn}: only 0 or all blocks of a stage are supported")
    if bb.get("selected_layers", [1, 2, 3]) != [1, 2, 3]:
        raise ValueError(f"backbone.selected_layers {bb['selected_layers']}: only C3-C5 are supported")
    return BackboneConfig(
        depth=DEPTHS.get(blocks, 50),
        norm="BN",
        freeze_at=0,
        stride_in_1x1=False,
        blocks_per_stage=() if blocks in DEPTHS else blocks,
        deform_on_per_stage=tuple(d > 0 for d in dcn),
        deform_modulated=True,
        deform_interval=interval,
        deform_bias=True,
    )


def _normalisation(transform: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in RGB order of the official FastBaseTransform: normalize, else subtract_means, else x / 255
    (``darknet_transform``)."""
    if transform.get("channel_order", "RGB") != "RGB":
        raise ValueError(f"backbone.transform.channel_order {transform['channel_order']!r}: only RGB is supported")
    if transform.get("normalize", True):
        return MEANS_BGR[::-1], STD_BGR[::-1]
    if transform.get("subtract_means", False):
        return MEANS_BGR[::-1], (1.0, 1.0, 1.0)
    return (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)


def official_to_train_config(c: dict[str, Any]) -> TrainConfig:
    """TrainConfig of an official config dict (``vars(cfg)`` with nested dicts, as the fixtures' config.json)."""
    bb = c["backbone"]
    backbone = _backbone(bb)
    f = c["fpn"]
    if not f.get("use_conv_downsample", True) or f.get("relu_downsample_layers", False):
        raise ValueError("fpn: only use_conv_downsample=True with relu_downsample_layers=False is supported")
    fpn = FPNConfig(
        out_channels=int(f["num_features"]),
        top_levels=int(f["num_downsample"]),
        upsample=str(f.get("interpolation_mode", "bilinear")),
        relu_outputs=bool(f.get("relu_pred_layers", True)),
        relu_before_p7=False,
    )
    proto = c["mask_proto_net"]
    up = next(i for i, layer in enumerate(proto) if layer[0] is None)
    if proto[up][1] != -2 or len(proto) != up + 3 or proto[-1][1] != 1:
        raise ValueError(f"mask_proto_net {proto}: expected n 3x3 convs, x2 upsample, one 3x3 conv, a 1x1 conv")
    ratios = {tuple(r[0]) for r in bb["pred_aspect_ratios"]}
    if len(ratios) != 1:
        raise ValueError("per-level aspect ratios differ: the shared head needs one list")
    head = YolactHeadConfig(
        num_classes=int(c["num_classes"]) - 1,
        scales=tuple(tuple(float(s) for s in lvl) for lvl in bb["pred_scales"]),
        aspect_ratios=tuple(float(r) for r in ratios.pop()),
        square_anchors=bool(bb.get("use_square_anchors", False)),
        num_prototypes=int(proto[-1][0]),
        proto_dim=int(proto[0][0]),
        proto_num_convs=up,
        semantic_loss=bool(c.get("use_semantic_segmentation_loss", False)),
        semantic_alpha=float(c.get("semantic_segmentation_alpha", 1.0)),
        pos_iou=float(c["positive_iou_threshold"]),
        neg_iou=float(c["negative_iou_threshold"]),
        crowd_iof=float(c.get("crowd_iou_threshold", 1.0)),
        ohem_negpos_ratio=int(c.get("ohem_negpos_ratio", 3)),
        bbox_alpha=float(c["bbox_alpha"]),
        conf_alpha=float(c["conf_alpha"]),
        mask_alpha=float(c["mask_alpha"]),
        masks_to_train=int(c["masks_to_train"]),
        maskiou=bool(c.get("use_maskiou", False)),
        maskiou_alpha=float(c.get("maskiou_alpha", 25.0)),
        discard_mask_area=int(c.get("discard_mask_area", -1)),
        nms_conf_thresh=float(c["nms_conf_thresh"]),
        nms_top_k=int(c["nms_top_k"]),
        nms_thresh=float(c["nms_thresh"]),
        max_num_detections=int(c["max_num_detections"]),
    )
    mean, std = _normalisation(bb.get("transform", {}))
    model = YolactConfig(backbone=backbone, fpn=fpn, yolact=head, pixel_mean=mean, pixel_std=std)
    size = int(c["max_size"])
    data = DataConfig(
        square_size=size,
        augment="ssd",
        with_masks=True,
        min_size_train=(size,),
        max_size_train=size,
        min_size_test=size,
        max_size_test=size,
    )
    lr = float(c["lr"])
    solver = SolverConfig(
        base_lr=lr,
        momentum=float(c["momentum"]),
        weight_decay=float(c["decay"]),
        weight_decay_norm=float(c["decay"]),
        ims_per_batch=8,
        max_iter=int(c["max_iter"]),
        steps=tuple(int(s) for s in c["lr_steps"]),
        gamma=float(c["gamma"]),
        warmup_iters=int(c.get("lr_warmup_until", 500)),
        warmup_factor=float(c.get("lr_warmup_init", lr)) / lr,
    )
    return TrainConfig(model=model, data=data, solver=solver)


def map_key(key: str, backbone: str = "resnet") -> str | None:
    """blendseg name of an official key (None when not part of the model) for a model whose backbone is
    ``backbone`` (``BackboneConfig.name``; DarkNet keys keep their official names)."""
    if key.startswith("backbone.") and backbone == "darknet":
        return key if re.match(r"^backbone\.(_preconv|layers)\.", key) else None
    if key.startswith("backbone."):
        k = key[len("backbone.") :]
        if k.startswith("conv1."):
            return "backbone.stem.conv1." + k[len("conv1.") :]
        if k.startswith("bn1."):
            return "backbone.stem.conv1.norm." + k[len("bn1.") :]
        m = re.match(r"^layers\.(\d+)\.(\d+)\.(.*)$", k)
        if not m:
            return None
        stage, block, rest = int(m.group(1)), m.group(2), m.group(3)
        rest = rest.replace("conv2.conv_offset_mask.", "conv2_offset.")
        rest = re.sub(r"^bn(\d)\.", r"conv\1.norm.", rest)
        rest = rest.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
        return f"backbone.res{stage + 2}.{block}.{rest}"
    m = re.match(r"^fpn\.(lat_layers|pred_layers|downsample_layers)\.(\d+)\.(.*)$", key)
    if m:
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "downsample_layers":
            return f"fpn.top_block.p{6 + j}.{rest}"
        name = "fpn_lateral" if kind == "lat_layers" else "fpn_output"
        return f"fpn.{name}{5 - j}.{rest}"  # stored C5 first
    if key.split(".")[0] in ("proto_net", "prediction_layers", "semantic_seg_conv", "maskiou_net"):
        return key
    return None


def convert_state_dict(state: dict[str, Tensor], backbone: str = "resnet") -> tuple[dict[str, Tensor], list[str]]:
    """Official state dict -> blendseg names, floats as float32. Returns (state, unmapped keys)."""
    return rename_state_dict(state, lambda k: map_key(k, backbone))


def load_official_config(path: str) -> dict[str, Any]:
    """An official config dict from JSON: either the dict itself or the fixtures' ``{"config": {...}}``."""
    with open(path) as f:
        raw = json.load(f)
    return raw["config"] if isinstance(raw.get("config"), dict) else raw


def convert_yolact(
    weights_path: str, preset: str | None = None, config_path: str | None = None
) -> tuple[TrainConfig, dict[str, Tensor], list[str]]:
    """Weights + (preset | official config JSON | the preset named by the file) -> (config, state, unmapped)."""
    from ..zoo import get_arch, get_preset

    if config_path:
        cfg = official_to_train_config(load_official_config(config_path))
    else:
        cfg = get_preset(preset or preset_from_filename(weights_path))
        if get_arch(cfg.model.arch).converter != "yolact":
            raise ValueError(f"preset {preset!r} is not a YOLACT preset")
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, backbone=dataclasses.replace(cfg.model.backbone, weights=""))
    )
    state, unmapped = convert_state_dict(read_state_dict(weights_path), cfg.model.backbone.name)
    return cfg, state, unmapped
