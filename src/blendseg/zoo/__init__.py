"""The model zoo: presets named after the reference configs (``fcos_r50_1x`` = AdelaiDet
``FCOS-Detection/R_50_1x.yaml``), one module per method, and the architecture -> builder table.

Variants are ``dataclasses.replace`` of a base, readable in the method's module; each preset is registered with
its source file and the AP the reference reports (``blendseg presets``).
"""

from __future__ import annotations

from torch import nn

from ..config import FCOSDetectorConfig
from ..modeling.core.fcos import build_fcos
from ..modeling.methods.blendmask import build_blendmask
from ..modeling.methods.meinst import build_meinst
from ..modeling.methods.yolact import build_yolact
from . import blendmask, fcos, meinst, yolact  # noqa: F401  (registers the presets)
from .blendmask import blendmask_ablation_r50_1x
from .registry import PRESETS, PresetInfo, get_preset, list_presets

BUILDERS = {"fcos": build_fcos, "blendmask": build_blendmask, "meinst": build_meinst, "yolact": build_yolact}


def build_model(model_cfg: FCOSDetectorConfig) -> nn.Module:
    """Build the model of a model config (dispatch on ``arch``)."""
    if model_cfg.arch not in BUILDERS:
        raise KeyError(f"unknown arch {model_cfg.arch!r}; available: {', '.join(sorted(BUILDERS))}")
    return BUILDERS[model_cfg.arch](model_cfg)


__all__ = [
    "BUILDERS", "PRESETS", "PresetInfo", "blendmask_ablation_r50_1x", "build_model", "get_preset",
    "list_presets",
]  # fmt: skip
