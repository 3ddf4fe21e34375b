"""A config's dict round trip (:func:`to_dict` / :func:`from_dict`), type-checked ``key=value`` overrides
(:func:`apply_overrides`: every value coerced to its dataclass field's type, an unknown key or a wrong type a
:class:`~blendseg.config.ConfigError` naming it) and its YAML (:func:`dump_yaml`)."""

from __future__ import annotations

import dataclasses
import functools
import sys
import typing
from typing import Any, Union

import yaml

from .config import ConfigError


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {list(value)!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin is Union:
        members = typing.get_args(tp)
        if isinstance(value, dict) and "arch" in value:  # model configs: the arch names the class
            for a in members:
                field_ = getattr(a, "__dataclass_fields__", {}).get("arch")
                if field_ is not None and field_.default == value["arch"]:
                    return _coerce(value, a, key)
        errors = []
        for a in members:
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 3e-3 / 1e5, without a dot, as strings
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            return str(value)
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a (nested) dict, type-checking each value; unknown keys are errors."""
    hints = _hints(cls)
    unknown = set(data) - set(hints)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in sorted(unknown))}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) for YAML / JSON / checkpoints."""

    def conv(v: Any) -> Any:
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(dataclasses.asdict(cfg))


# what torchvision's ImageNet ResNets were trained with (detectron2's MSRA weights: stride in the 1x1, BGR, std 1)
TORCHVISION_WEIGHT_SETTINGS = {
    "model.backbone.stride_in_1x1": False,
    "model.input_format": "RGB",
    "model.pixel_mean": (123.675, 116.28, 103.53),
    "model.pixel_std": (58.395, 57.12, 57.375),
}


def apply_overrides(cfg: Any, overrides: list[str]) -> Any:
    """Return a copy of ``cfg`` with ``a.b.c=value`` overrides applied (values parsed as YAML). A ResNet with
    ``model.backbone.weights=torchvision`` also gets what those weights need (:data:`TORCHVISION_WEIGHT_SETTINGS`),
    except the keys the overrides set themselves, with a line on stderr saying what changed."""
    given = set()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        cfg = _replace_path(cfg, key.strip().split("."), yaml.safe_load(raw), key.strip())
        given.add(key.strip())
    typed = tuple(k.split(".", 1)[1] for k in sorted(given) if k.split(".")[0] == "solver" and k.count(".") == 1)
    kept = tuple(k for k in typed if k in BATCH_SCALED)
    if kept and hasattr(cfg, "solver"):
        cfg = dataclasses.replace(
            cfg, solver=dataclasses.replace(cfg.solver, as_given=tuple(sorted({*cfg.solver.as_given, *kept})))
        )
    return _torchvision_settings(cfg, given)


# the solver keys another step batch rescales (engine.train.scale_to_batch), unless given as overrides
BATCH_SCALED = ("base_lr", "max_iter", "steps", "warmup_iters", "checkpoint_period", "eval_period")


def get_value(cfg: Any, key: str) -> Any:
    """The value at a dotted key (``model.backbone.depth``); sequences as tuples, so they compare with presets'."""
    value = functools.reduce(getattr, key.split("."), cfg)
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _torchvision_settings(cfg: Any, given: set[str]) -> Any:
    model = getattr(cfg, "model", None)
    backbone = getattr(model, "backbone", None)
    if backbone is None or backbone.name != "resnet" or not backbone.weights.startswith("torchvision"):
        return cfg
    changed = []
    for key, value in TORCHVISION_WEIGHT_SETTINGS.items():
        if key not in given and get_value(cfg, key) != value:
            cfg = _replace_path(cfg, key.split("."), value, key)
            changed.append(f"{key}={value}")
    if changed:
        print(
            f"model.backbone.weights=torchvision: set {', '.join(changed)} (what those weights were trained "
            "with; an override of any of them wins)",
            file=sys.stderr,
        )
    return cfg


def _replace_path(obj: Any, path: list[str], value: Any, full_key: str) -> Any:
    hints = _hints(type(obj))
    name = path[0]
    if name not in hints:
        valid = ", ".join(sorted(hints))
        raise ConfigError(f"unknown config key {full_key!r} (valid at this level: {valid})")
    if len(path) == 1:
        new = _coerce(value, hints[name], full_key)
    else:
        child = getattr(obj, name)
        if not dataclasses.is_dataclass(child):
            raise ConfigError(f"{full_key!r}: {name} is not a section")
        new = _replace_path(child, path[1:], value, full_key)
    return dataclasses.replace(obj, **{name: new})


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
