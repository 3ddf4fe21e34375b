import pytest

from blendseg.config import ConfigError, TrainConfig, apply_overrides, from_dict, to_dict
from blendseg.zoo import build_model, get_preset, list_presets


def test_overrides_are_type_checked():
    cfg = apply_overrides(
        get_preset("fcos_tiny"),
        ["solver.max_iter=12", "model.fcos.nms_th=0.5", "data.min_size_train=[128, 160]"],
    )
    assert cfg.solver.max_iter == 12 and cfg.model.fcos.nms_th == 0.5 and cfg.data.min_size_train == (128, 160)
    with pytest.raises(ConfigError, match="unknown config key 'solver.max_iters'"):
        apply_overrides(cfg, ["solver.max_iters=3"])
    with pytest.raises(ConfigError, match="expected an integer"):
        apply_overrides(cfg, ["solver.max_iter=abc"])
    with pytest.raises(ConfigError, match="expected true/false"):
        apply_overrides(cfg, ["data.hflip_train=3"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["solver.max_iter"])


def test_dict_round_trip_and_unknown_keys():
    cfg = get_preset("fcos_rt_ms_r50_4x_bn")
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    d = to_dict(cfg)
    d["model"]["fcos"]["bogus"] = 1
    with pytest.raises(ConfigError, match="model.fcos.bogus"):
        from_dict(TrainConfig, d)


def test_presets_build():
    assert {"fcos_r50_1x", "fcos_ms_r50_2x", "fcos_tiny", "fcos_tiny_test"} <= set(list_presets())
    for name in ("fcos_tiny", "fcos_tiny_test"):
        assert build_model(get_preset(name).model) is not None
    with pytest.raises(KeyError, match="unknown preset"):
        get_preset("nope")
