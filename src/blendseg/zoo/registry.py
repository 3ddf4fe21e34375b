"""Preset registration: ``@preset(source, reported)`` puts a config function under its name with the reference
config file it reproduces and the accuracy that reference publishes for it."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..config import TrainConfig


@dataclass(frozen=True)
class PresetInfo:
    """A preset: its config function, the reference config it follows ("" for blendseg's own CPU recipes) and the
    AP the reference reports for its released model ("" where it publishes none)."""

    fn: Callable[[], TrainConfig]
    source: str
    reported: str

    @property
    def summary(self) -> str:
        return " ".join((self.fn.__doc__ or "").strip().split("\n\n")[0].split())


PRESETS: dict[str, PresetInfo] = {}
ALIASES: dict[str, str] = {}  # names earlier versions used -> today's


def preset(source: str = "", reported: str = "", aliases: tuple[str, ...] = ()):
    """Register the decorated config function as a preset named after it (``aliases``: former names)."""

    def register(fn: Callable[[], TrainConfig]) -> Callable[[], TrainConfig]:
        if fn.__name__ in PRESETS:
            raise ValueError(f"preset {fn.__name__!r} registered twice")
        PRESETS[fn.__name__] = PresetInfo(fn, source, reported)
        ALIASES.update({a: fn.__name__ for a in aliases})
        return fn

    return register


def get_preset(name: str) -> TrainConfig:
    name = ALIASES.get(name, name)
    if name not in PRESETS:
        close = difflib.get_close_matches(name, sorted(PRESETS) + sorted(ALIASES), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise KeyError(f"unknown preset {name!r}; {hint}`blendseg presets` lists all {len(PRESETS)}")
    cfg = PRESETS[name].fn()
    if cfg.solver.reference_batch == 0:  # base_lr is the preset's for its own batch
        cfg = replace(cfg, solver=replace(cfg.solver, reference_batch=cfg.solver.ims_per_batch))
    return cfg


def list_presets() -> list[str]:
    return sorted(PRESETS)
