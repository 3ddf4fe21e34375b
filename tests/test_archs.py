"""The table of architectures (blendseg/zoo/archs.py) is the one place a method is registered: every record names
parts that exist or says why it has none, every preset's arch is in it, and what depends on the method (building,
exporting, drawing, converting, evaluating) reads it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from blendseg.zoo import ARCHS, PRESETS, build_model, get_arch, get_preset, suite_presets
from blendseg.zoo.archs import PARTS, Arch


def problems(archs: dict[str, Arch]) -> list[str]:
    """What is wrong with a table: a part neither named nor opted out (or both), a name that does not import, a test
    preset of another arch, a converter blendseg does not have."""
    out = []
    for name, a in archs.items():
        if a.name != name:
            out.append(f"{name}: its record is named {a.name!r}")
        for part in PARTS:
            given, why = bool(getattr(a, part)), a.opt_out.get(part, "")
            if given == bool(why):
                out.append(f"{name}: {part} " + ("named and opted out" if given else "missing, no reason given"))
            elif given:
                try:
                    a.part(part)
                except (ImportError, AttributeError) as e:
                    out.append(f"{name}: {part} {getattr(a, part)!r} does not import: {e}")
        if a.test_preset not in PRESETS or get_preset(a.test_preset).model.arch != name:
            out.append(f"{name}: test preset {a.test_preset!r} is not one of its presets")
        if a.converter not in ("adelaidet", "yolact"):
            out.append(f"{name}: converter {a.converter!r} (blendseg convert --from adelaidet | yolact)")
    return out


def test_every_arch_names_what_exists_or_says_why_not():
    assert problems(ARCHS) == []
    assert {get_preset(p).model.arch for p in PRESETS} == set(ARCHS)  # no preset of an unregistered arch


def test_an_arch_left_out_of_one_place_fails_by_name():
    broken = dict(ARCHS)
    broken["meinst"] = dataclasses.replace(ARCHS["meinst"], figure="")
    broken["yolact"] = dataclasses.replace(ARCHS["yolact"], export_graph="blendseg.export.graph:NoSuchGraph")
    found = problems(broken)
    assert any("meinst: figure missing, no reason given" in p for p in found)
    assert any("yolact: export_graph 'blendseg.export.graph:NoSuchGraph' does not import" in p for p in found)
    with pytest.raises(KeyError, match="unknown arch 'condinst'; available: blendmask, fcos, meinst, yolact"):
        get_arch("condinst")


@pytest.mark.parametrize("preset", suite_presets())
def test_what_depends_on_the_method_reads_the_table(preset):
    from blendseg.export.graph import image_graph
    from blendseg.figures import show_bases

    cfg = get_preset(preset)
    arch = get_arch(cfg.model.arch)
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    assert type(model) is type(arch.build(cfg.model))
    assert isinstance(image_graph(model, cfg), type(arch.part("export_graph")(model, cfg, 0.3, 100)))
    image = torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8)
    drawn = show_bases(model, cfg, image, conf=0.0)
    assert (drawn is None) == (arch.part("figure") is None)
