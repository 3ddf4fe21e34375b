"""The module paths of before the core / methods split (0.1) still import for one release, with a
DeprecationWarning that names the new path, and hold the very objects of the new modules."""

from __future__ import annotations

import importlib
import sys
import warnings

import pytest

from blendseg.modeling import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_imports_the_new_modules_names_with_a_warning(old):
    name = f"blendseg.modeling.{old}"
    sys.modules.pop(name, None)
    with pytest.warns(DeprecationWarning, match=MOVED[old][0].replace(".", r"\.")):
        module = importlib.import_module(name)
    for new in MOVED[old]:
        target = importlib.import_module(f"blendseg.modeling.{new}")
        public = [k for k in vars(target) if not k.startswith("_")]
        assert public and all(getattr(module, k) is getattr(target, k) for k in public)
    sys.modules.pop(name, None)


def test_old_import_statements_keep_working():
    for name in ("blendseg.modeling.fcos", "blendseg.modeling.backbone"):
        sys.modules.pop(name, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from blendseg.modeling.backbone import Conv2dNorm, build_resnet

        from blendseg.modeling import fcos
    from blendseg.modeling.core.fcos import FCOS
    from blendseg.modeling.core.layers import Conv2dNorm as new_conv
    from blendseg.modeling.core.resnet import build_resnet as new_build

    assert fcos.FCOS is FCOS and Conv2dNorm is new_conv and build_resnet is new_build


def test_a_path_that_never_existed_still_fails():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("blendseg.modeling.no_such_module")
