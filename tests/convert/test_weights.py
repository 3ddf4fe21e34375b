"""``--weights FILE`` recognised by content: blendseg checkpoints, official AdelaiDet and dbolya/yolact models (the
reference fixtures' weights), torchvision and detectron2 backbone state dicts (small files made here); anything
else refused with a message saying what the file holds."""

from __future__ import annotations

import pytest
import torch
import torchvision

from blendseg.convert.adelaidet import convert_adelaidet
from blendseg.convert.weights import recognise
from blendseg.convert.yolact import convert_yolact
from blendseg.engine.runner import load_matching
from blendseg.overrides import apply_overrides
from blendseg.zoo import build_model, get_preset

from ..conftest import reference_dir


def test_a_blendseg_checkpoint(checkpoint):
    cfg = get_preset("blendmask_tiny_test")
    model = build_model(cfg.model)
    state, what = recognise(checkpoint, cfg, model)
    assert what == "a blendseg checkpoint"
    loaded, skipped = load_matching(model, state)
    assert not skipped and len(loaded) == len(model.state_dict())


@pytest.mark.parametrize(
    ("name", "kind"),
    [("blendmask_r18_tiny", "AdelaiDet"), ("meinst_r18_tiny", "AdelaiDet"), ("blendmask_dla34_tiny", "AdelaiDet"),
     ("yolact_base_tiny", "dbolya/yolact"), ("yolact_darknet53_tiny", "dbolya/yolact")],
)  # fmt: skip
def test_official_models_map_as_the_converters_do(name, kind):
    """The official file as it is (no `blendseg convert` first) gives the converter's state dict for a training
    model of the same method and backbone."""
    d = reference_dir(name)
    weights = str(d / "weights.safetensors")
    if kind == "AdelaiDet":
        cfg, converted, _ = convert_adelaidet(str(d / "config.yaml"), weights)
    else:
        cfg, converted, _ = convert_yolact(weights, config_path=str(d / "config.json"))
    model = build_model(cfg.model)
    state, what = recognise(weights, cfg, model)
    assert kind in what
    assert state.keys() == converted.keys() and all(torch.equal(state[k], converted[k]) for k in state)
    loaded, _ = load_matching(model, state)
    assert len(loaded) == len(state)


def _full_width_resnet18():
    cfg = apply_overrides(get_preset("blendmask_tiny_test"), ["model.backbone.stem_out_channels=64",
                                                              "model.backbone.res2_out_channels=64"])  # fmt: skip
    return cfg, build_model(cfg.model)


def test_torchvision_and_detectron2_backbones(tmp_path):
    cfg, model = _full_width_resnet18()
    backbone = model.fcos.backbone
    tv = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(tv, tmp_path / "resnet18.pth")
    state, what = recognise(tmp_path / "resnet18.pth", cfg, model)
    assert what == "a backbone state dict (torchvision layout)"
    loaded, _ = load_matching(model, state)
    own = {f"fcos.backbone.{k}" for k in backbone.state_dict() if not k.endswith("num_batches_tracked")}
    assert own <= set(loaded)
    assert torch.equal(model.state_dict()["fcos.backbone.res3.0.conv1.weight"], tv["layer2.0.conv1.weight"])

    from safetensors.torch import save_file

    d2 = {k: v.clone() for k, v in backbone.state_dict().items()}
    save_file(d2, str(tmp_path / "d2.safetensors"))
    state, what = recognise(tmp_path / "d2.safetensors", cfg, build_model(cfg.model))
    assert what == "a backbone state dict (detectron2 layout)" and set(state) == {f"fcos.backbone.{k}" for k in d2}


def test_other_files_are_refused_saying_what_they_hold(tmp_path):
    cfg = get_preset("blendmask_tiny_test")
    model = build_model(cfg.model)
    torch.save({"encoder.layer.0.weight": torch.zeros(2)}, tmp_path / "bert.pth")
    with pytest.raises(ValueError, match=r"bert.pth: 1 tensors named like 'encoder.layer.0.weight': not a blendseg"):
        recognise(tmp_path / "bert.pth", cfg, model)
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds a list, not a dict of tensors"):
        recognise(tmp_path / "list.pth", cfg, model)
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a weights file blendseg can read"):
        recognise(tmp_path / "text.pth", cfg, model)
    with pytest.raises(FileNotFoundError):
        recognise(tmp_path / "missing.pth", cfg, model)


def test_train_weights_reports_what_it_loaded(tmp_path, synth_data, capsys):
    from blendseg.cli import main

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    code = main(["train", "blendmask_tiny_test", str(synth_data), "--out", str(tmp_path / "run"), "--no-eval",
                 "--weights", str(tmp_path / "resnet18.pth"), "data.num_workers=0", "solver.max_iter=1",
                 "solver.ims_per_batch=2", "model.backbone.stem_out_channels=64",
                 "model.backbone.res2_out_channels=64"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "(a backbone state dict (torchvision layout)); " in out and "not in the file stay random" in out


def test_torchvision_weights_bring_their_settings_and_overrides_win(capsys):
    from blendseg.overrides import TORCHVISION_WEIGHT_SETTINGS

    cfg = apply_overrides(get_preset("blendmask_r50_1x"), ["model.backbone.weights=torchvision"])
    assert cfg.model.backbone.stride_in_1x1 is False and cfg.model.input_format == "RGB"
    assert tuple(cfg.model.pixel_std) == TORCHVISION_WEIGHT_SETTINGS["model.pixel_std"]
    assert "set model.backbone.stride_in_1x1=False" in capsys.readouterr().err
    cfg = apply_overrides(get_preset("blendmask_r50_1x"), ["model.backbone.weights=torchvision",
                                                            "model.backbone.stride_in_1x1=true"])  # fmt: skip
    assert cfg.model.backbone.stride_in_1x1 is True and cfg.model.input_format == "RGB"
    assert apply_overrides(get_preset("blendmask_r50_1x"), []).model.input_format == "BGR"  # MSRA weights' own


def test_a_torchvision_file_on_msra_settings_warns(tmp_path):
    cfg = apply_overrides(
        get_preset("blendmask_r50_1x"), ["model.backbone.depth=18", "model.backbone.res2_out_channels=64"]
    )
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    with pytest.warns(UserWarning, match="torchvision ResNet: it was trained with model.backbone.stride_in_1x1=False"):
        recognise(tmp_path / "resnet18.pth", cfg, build_model(cfg.model))
