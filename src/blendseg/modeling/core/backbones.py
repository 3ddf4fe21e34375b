"""The backbone table: every backbone returns named feature maps and exposes ``out_channels`` and ``strides``
dicts under the same names, so FCOS, BlendMask, MEInst and YOLACT take any of them (``fpn.in_features`` names the
maps the FPN reads)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ...config import BackboneConfig
from .darknet import build_darknet
from .dla import build_dla
from .resnet import build_resnet

BACKBONES: dict[str, Callable[[BackboneConfig], nn.Module]] = {
    "resnet": build_resnet,  # res2-res5 (detectron2 names)
    "dla": build_dla,  # level0-level5 (AdelaiDet names)
    "darknet": build_darknet,  # res1-res5 (named by stride)
}


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    if cfg.name not in BACKBONES:
        raise ValueError(f"unknown backbone {cfg.name!r}; available: {', '.join(sorted(BACKBONES))}")
    return BACKBONES[cfg.name](cfg)
