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
TEST_SUFFIX = "_test"  # the test suite's presets (tiny models for small images): listed with --all only


def preset(source: str = "", reported: str = ""):
    """Register the decorated config function as a preset named after it."""

    def register(fn: Callable[[], TrainConfig]) -> Callable[[], TrainConfig]:
        if fn.__name__ in PRESETS:
            raise ValueError(f"preset {fn.__name__!r} registered twice")
        PRESETS[fn.__name__] = PresetInfo(fn, source, reported)
        return fn

    return register


def get_preset(name: str) -> TrainConfig:
    """The config of the preset ``name`` (``blendseg presets`` lists them), its ``reference_batch`` set."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, sorted(PRESETS), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise KeyError(f"unknown preset {name!r}; {hint}`blendseg presets` lists all {len(PRESETS)}")
    cfg = PRESETS[name].fn()
    if cfg.solver.reference_batch == 0:  # base_lr is the preset's for its own batch
        cfg = replace(cfg, solver=replace(cfg.solver, reference_batch=cfg.solver.ims_per_batch))
    return cfg


def list_presets(all: bool = False) -> list[str]:
    """The presets' names, sorted; the test suite's (``*_test``) only with ``all``."""
    return sorted(n for n in PRESETS if all or not n.endswith(TEST_SUFFIX))
