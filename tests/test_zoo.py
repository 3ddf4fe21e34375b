"""The model zoo: every preset builds, is registered with its source, and the presets of released configs have
exactly the released checkpoints' key layout (state_dict_layouts.json, dla34_keys.json)."""

import dataclasses
import json

import pytest
import torch

from blendseg.convert.adelaidet import map_key
from blendseg.zoo import PRESETS, build_model, get_preset, list_presets

from .conftest import reference_dir


def _build(name: str) -> torch.nn.Module:
    cfg = get_preset(name).model
    cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, weights=""))  # no download
    with torch.device("meta"):  # shapes only: presets in milliseconds
        return build_model(cfg)


@pytest.mark.parametrize("name", list_presets(all=True))
def test_every_preset_builds_and_names_its_source(name):
    model = _build(name)
    assert sum(p.numel() for p in model.parameters()) > 0
    info = PRESETS[name]
    assert info.summary, name
    if not name.endswith(("_tiny", "_tiny_test")) and "ablation" not in name:
        assert info.source.startswith(("AdelaiDet configs/", "dbolya/yolact ")), name


def test_test_presets_are_listed_with_all_only(capsys):
    import blendseg
    from blendseg.cli import main

    assert blendseg.list_presets is list_presets and blendseg.get_preset is get_preset
    shown = list_presets()
    assert "blendmask_r50_1x" in shown and not any(n.endswith("_test") for n in shown)
    assert set(list_presets(all=True)) == set(PRESETS) > set(shown)
    main(["presets"])
    assert "blendmask_tiny_test" not in capsys.readouterr().out
    main(["presets", "--all"])
    assert "blendmask_tiny_test" in capsys.readouterr().out


def _released_layouts() -> dict[str, dict]:
    ref = reference_dir()
    configs = json.loads((ref / "state_dict_layouts.json").read_text())["configs"]
    configs.update(json.loads((ref / "dla34_keys.json").read_text())["configs"])
    for entry in configs.values():  # "same_layout_as": the layout of an earlier entry
        if "state_dict" not in entry and "same_layout_as" in entry:
            entry["state_dict"] = configs[entry["same_layout_as"]]["state_dict"]
    return configs


def test_presets_of_released_configs_have_the_released_layouts():
    layouts = _released_layouts()
    checked = []
    for name, info in PRESETS.items():
        path = info.source.removeprefix("AdelaiDet configs/")
        if path not in layouts:
            continue
        cfg = get_preset(name).model
        ours = {k: list(v.shape) for k, v in _build(name).state_dict().items()}
        mapped = {}
        for key, spec in layouts[path]["state_dict"].items():
            if key in ("pixel_mean", "pixel_std"):
                continue
            new = map_key(key, cfg.arch)
            assert new is not None, (name, key)
            mapped[new] = spec["shape"]
        assert set(mapped) == set(ours), (name, sorted(set(mapped) ^ set(ours))[:6])
        assert [k for k in mapped if mapped[k] != ours[k]] == [], name
        checked.append(path)
    assert len(set(checked)) == len(layouts), sorted(set(layouts) - set(checked))  # every released layout has one
