"""What ``blendseg train --weights FILE`` starts from, recognised by content, not by name: a blendseg checkpoint, an
official AdelaiDet (detectron2) model (FCOS, BlendMask, MEInst), an official dbolya/yolact model, or a backbone state
dict in torchvision's or detectron2's layout (ImageNet weights). Each becomes a state dict in the training model's
names; the caller loads what matches in name and shape (:func:`~blendseg.engine.runner.load_matching`).
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..modeling.core.resnet import torchvision_to_ours
from ..overrides import TORCHVISION_WEIGHT_SETTINGS, get_value
from ..weights_io import read_weights, state_dict_of
from . import adelaidet, yolact

EXPECTED = (
    "a blendseg checkpoint, an AdelaiDet / detectron2 model (FCOS, BlendMask, MEInst), a dbolya/yolact model, or a "
    "backbone state dict in torchvision's or detectron2's layout"
)


def _backbone_prefix(model: nn.Module) -> tuple[str, nn.Module]:
    """(name prefix, module) of the model's backbone: "backbone." (FCOS, YOLACT) or "fcos.backbone."."""
    core = getattr(model, "fcos", model)
    for name, module in model.named_modules():
        if module is core.backbone:
            return name + ".", module
    raise ValueError(f"{type(model).__name__} has no backbone")


def recognise(path: str | os.PathLike, cfg: TrainConfig, model: nn.Module) -> tuple[dict[str, Tensor], str]:
    """(state dict in ``model``'s names, what the file is) for the training model ``model`` of ``cfg``. Official
    models are mapped with the converters for the training config's method and backbone; backbone state dicts are
    put under the model's backbone. A file that is none of these is refused, naming what it holds."""
    try:
        obj = read_weights(path)
    except ValueError as e:
        raise ValueError(f"{e}; expected {EXPECTED}") from None
    if isinstance(obj.get("model"), dict) and "config" in obj:
        state = {k: v for k, v in obj["model"].items() if torch.is_tensor(v)}
        return state, "a blendseg checkpoint"
    state = state_dict_of(obj)
    keys = list(state)
    if any(k.startswith(("backbone.bottom_up.", "proposal_generator.", "basis_module.", "top_layer.")) for k in keys):
        _official(path, "adelaidet", cfg)
        converted, _ = adelaidet.convert_state_dict(state, cfg.model.arch)
        return converted, f"an AdelaiDet model, mapped to blendseg's {cfg.model.arch} names"
    if any(k.startswith(("proto_net.", "prediction_layers.", "fpn.lat_layers.")) for k in keys):
        _official(path, "yolact", cfg)
        converted, _ = yolact.convert_state_dict(state, cfg.model.backbone.name)
        return converted, "a dbolya/yolact model, mapped to blendseg's names"
    prefix, backbone = _backbone_prefix(model)
    layout = "detectron2"
    if any(k.startswith("layer1.") for k in keys):
        state, layout = torchvision_to_ours(state), "torchvision"
        m = cfg.model
        wanted = {k: v for k, v in TORCHVISION_WEIGHT_SETTINGS.items() if get_value(cfg, k) != v}
        if wanted:
            warnings.warn(
                f"{path} is a torchvision ResNet: it was trained with "
                + ", ".join(f"{k}={v}" for k, v in wanted.items())
                + f" (this run has stride_in_1x1={m.backbone.stride_in_1x1}, input_format={m.input_format}); "
                "model.backbone.weights=torchvision sets them by itself",
                stacklevel=2,
            )
    own = set(backbone.state_dict())
    if own and len(own & set(state)) >= 0.5 * len(own):
        return {prefix + k: v for k, v in state.items() if k in own}, f"a backbone state dict ({layout} layout)"
    examples = ", ".join(repr(k) for k in keys[:3]) or "none"
    raise ValueError(f"{path}: {len(keys)} tensors named like {examples}: not {EXPECTED}")


def _official(path, source: str, cfg: TrainConfig) -> None:
    """Refuse official weights of another code base than the arch's (:data:`~blendseg.zoo.archs.ARCHS`)."""
    from ..zoo.archs import get_arch

    arch = get_arch(cfg.model.arch)
    if arch.converter != source:
        names = {"adelaidet": "an AdelaiDet", "yolact": "a dbolya/yolact"}
        raise ValueError(
            f"{path}: {names[source]} model, but the {arch.name} config takes {names[arch.converter]} one's weights "
            "(choose a preset of that method, or other weights)"
        )
