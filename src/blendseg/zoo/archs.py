"""One record per architecture (``cfg.model.arch``): everything that differs by method, in one place.

Adding a method means one :class:`Arch` here (and the code it names); every part of blendseg that depends on the
method reads this table, and tests/test_archs.py fails when a record names something that does not exist or leaves
a part out without saying why. The parts above this layer (export graphs, figures) are named by
``"module:attribute"`` and imported when asked for (:meth:`Arch.part`), so the table stays in the zoo's layer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from ..modeling.core.fcos import build_fcos
from ..modeling.methods.blendmask import build_blendmask
from ..modeling.methods.meinst import build_meinst
from ..modeling.methods.yolact import build_yolact

PARTS = ("export_graph", "figure")  # the parts named by path, each either given or opted out with a reason


@dataclass(frozen=True)
class Arch:
    """An architecture: ``build`` (model config -> module), ``masks`` (instance masks, so mask AP, or boxes only),
    ``converter`` (the official weights it converts from: ``adelaidet`` or ``yolact``, ``blendseg convert --from``),
    ``test_preset`` (the test suite's tiny preset), and the parts named by path: ``export_graph`` (the module that
    wraps the model for ONNX, blendseg/export/graph.py) and ``figure`` (``--show-bases``, blendseg/figures.py).
    ``opt_out``: part -> why this arch has none."""

    name: str
    build: Callable[..., nn.Module]
    masks: bool
    converter: str
    test_preset: str
    export_graph: str = ""
    figure: str = ""
    opt_out: dict[str, str] = field(default_factory=dict)

    def part(self, name: str):
        """The object a part names (imported now), or None where the arch opts out of it."""
        path = getattr(self, name)
        if not path:
            return None
        module, _, attr = path.partition(":")
        return getattr(importlib.import_module(module), attr)


ARCHS: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch(
            "fcos",
            build_fcos,
            masks=False,
            converter="adelaidet",
            test_preset="fcos_tiny_test",
            export_graph="blendseg.export.graph:FCOSGraph",
            opt_out={"figure": "boxes only: no bases, coefficients or codes to draw"},
        ),
        Arch(
            "blendmask",
            build_blendmask,
            masks=True,
            converter="adelaidet",
            test_preset="blendmask_tiny_test",
            export_graph="blendseg.export.graph:BlendMaskGraph",
            figure="blendseg.figures:blendmask_figure",
        ),
        Arch(
            "meinst",
            build_meinst,
            masks=True,
            converter="adelaidet",
            test_preset="meinst_tiny_test",
            export_graph="blendseg.export.graph:MEInstGraph",
            figure="blendseg.figures:meinst_figure",
        ),
        Arch(
            "yolact",
            build_yolact,
            masks=True,
            converter="yolact",
            test_preset="yolact_tiny_test",
            export_graph="blendseg.export.graph:YolactGraph",
            figure="blendseg.figures:yolact_figure",
        ),
    )
}


def get_arch(name: str) -> Arch:
    if name not in ARCHS:
        raise KeyError(f"unknown arch {name!r}; available: {', '.join(sorted(ARCHS))}")
    return ARCHS[name]


def suite_presets(masks: bool | None = None) -> list[str]:
    """The test suite's preset of every arch (``masks``: only those with, or without, instance masks)."""
    return [a.test_preset for a in ARCHS.values() if masks is None or a.masks == masks]
