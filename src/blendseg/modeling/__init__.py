"""Model modules, in two parts:

- :mod:`~blendseg.modeling.core`: what every method shares. The backbones behind one table (ResNet, DLA-34,
  DarkNet-53: named feature maps with strides and channels), the FPN, and the FCOS detector (head, assignment +
  loss, decoding) with its one extension point, the ``embed_head`` that a method hangs on a tower.
- :mod:`~blendseg.modeling.methods`: one module group per method, each importing the core and never another method.
  BlendMask (``blendmask``: the top layer and the blender; ``blendmask_bottom``: the bases; ``blendmask_panoptic``:
  the semantic FPN head of the panoptic extension), MEInst (``meinst``) and YOLACT / YOLACT++ (``yolact``,
  ``yolact_loss``).

Until 0.2 the module paths of before the split (``blendseg.modeling.fcos``, ``blendseg.modeling.backbone``, ...)
still import, with a ``DeprecationWarning`` naming the new path (:data:`MOVED`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import ModuleType

_OLD = "blendseg.modeling."
# old module (before the core / methods split, 0.1) -> the module(s) its names are in now
MOVED: dict[str, tuple[str, ...]] = {
    "backbone": ("core.layers", "core.resnet"),
    "backbones": ("core.backbones",),
    "dla": ("core.dla",),
    "darknet": ("core.darknet",),
    "fpn": ("core.fpn",),
    "fcos": ("core.fcos",),
    "fcos_inference": ("core.fcos_inference",),
    "fcos_loss": ("core.fcos_loss",),
    "fcos_types": ("core.fcos_types",),
    "fuse": ("core.fuse",),
    "blendmask": ("methods.blendmask",),
    "bottom": ("methods.blendmask_bottom",),
    "semseg_fpn": ("methods.blendmask_panoptic",),
    "meinst": ("methods.meinst",),
    "yolact": ("methods.yolact",),
    "yolact_loss": ("methods.yolact_loss",),
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path of :data:`MOVED` as a module holding the new module's names (the same objects): consulted
    after the regular finders, so it only answers for paths whose file is gone."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.startswith(_OLD) and fullname[len(_OLD) :] in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        new = [f"{_OLD}{m}" for m in MOVED[module.__name__[len(_OLD) :]]]
        warnings.warn(
            f"{module.__name__} moved to {' and '.join(new)}; the old path goes in blendseg 0.2",
            DeprecationWarning,
            stacklevel=2,
        )
        for name in new:
            target = importlib.import_module(name)
            module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__")})


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
