"""The model zoo: presets named after the reference configs (``fcos_r50_1x`` = AdelaiDet
``FCOS-Detection/R_50_1x.yaml``), one module per method, and the table of architectures (:mod:`~blendseg.zoo.archs`).

Variants are ``dataclasses.replace`` of a base, readable in the method's module; each preset is registered with
its source file and the AP the reference reports (``blendseg presets``).
"""

from __future__ import annotations

from torch import nn

from ..config import FCOSDetectorConfig
from . import blendmask, fcos, meinst, yolact  # noqa: F401  (registers the presets)
from .archs import ARCHS, Arch, get_arch, suite_presets
from .blendmask import blendmask_ablation_r50_1x
from .registry import PRESETS, PresetInfo, get_preset, list_presets


def build_model(model_cfg: FCOSDetectorConfig) -> nn.Module:
    """Build the model of a model config (its arch's builder, :data:`~blendseg.zoo.archs.ARCHS`)."""
    return get_arch(model_cfg.arch).build(model_cfg)


__all__ = [
    "ARCHS",
    "Arch",
    "PRESETS",
    "PresetInfo",
    "blendmask_ablation_r50_1x",
    "build_model",
    "get_arch",
    "get_preset",
    "list_presets",
    "suite_presets",
]
