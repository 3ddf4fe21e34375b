"""Official YOLACT checkpoints: every key of the released layouts maps onto our presets, file-name inference (the
parity command on the official fixtures: tests/test_parity_tool.py)."""

import dataclasses
import json
from pathlib import Path

import pytest

from blendseg.convert.yolact import map_key, preset_from_filename
from blendseg.zoo import build_model, get_preset

from ..conftest import reference_dir

TOOL = Path(__file__).resolve().parents[2] / "tools" / "parity.py"


@pytest.mark.parametrize(
    ("layout", "preset"),
    [
        ("yolact_base", "yolact_base"),
        ("yolact_resnet50", "yolact_resnet50"),
        ("yolact_plus_base", "yolact_plus_base"),
        ("yolact_plus_resnet50", "yolact_plus_resnet50"),
        ("yolact_darknet53", "yolact_darknet53"),
    ],
)
def test_every_key_of_the_official_layouts_maps_onto_the_preset(layout, preset):
    layouts = json.loads((reference_dir() / "yolact_state_dict_layouts.json").read_text())
    entry = layouts[layout]
    cfg = get_preset(preset).model
    cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, weights=""))
    ours = {k: tuple(v.shape) for k, v in build_model(cfg).state_dict().items()}
    mapped = {}
    for key, shape, _ in entry["keys"]:
        new = map_key(key, cfg.backbone.name)
        assert new is not None, key
        mapped[new] = tuple(shape)
    assert len(mapped) == len(entry["keys"]) == entry["num_keys"]
    assert set(mapped) == set(ours), (sorted(set(mapped) - set(ours))[:5], sorted(set(ours) - set(mapped))[:5])
    for k, shape in mapped.items():
        if k.startswith(("prediction_layers.0.conf_layer", "semantic_seg_conv", "maskiou_net.maskiou_net.10")):
            continue  # 81 COCO classes there, the preset's class count is the user's
        assert ours[k] == shape, k
    dcn = sum(k.endswith("conv2_offset.weight") for k in ours)
    assert dcn == entry.get("num_dcn_layers", 0)


def test_preset_inferred_from_the_official_file_name():
    assert preset_from_filename("weights/yolact_plus_resnet50_54_800000.pth") == "yolact_plus_resnet50"
    assert preset_from_filename("yolact_im700_54_800000.pth") == "yolact_im700"
    assert preset_from_filename("yolact_darknet53_54_800000.pth") == "yolact_darknet53"
    with pytest.raises(ValueError, match="cannot infer"):
        preset_from_filename("model_final.pth")
