import pytest

from blendseg.config import ConfigError, TrainConfig
from blendseg.overrides import apply_overrides, from_dict, to_dict
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
    # exponents without a dot, which YAML 1.1 leaves as strings (solver.base_lr=3e-3 failed before)
    assert apply_overrides(cfg, ["solver.base_lr=3e-3"]).solver.base_lr == 0.003
    assert from_dict(TrainConfig, {"solver": {"base_lr": "1e-4"}}).solver.base_lr == 0.0001
    with pytest.raises(ConfigError, match="expected a number"):
        apply_overrides(cfg, ["solver.base_lr=fast"])


def test_dict_round_trip_and_unknown_keys():
    cfg = get_preset("fcos_rt_ms_r50_4x_syncbn_bn_head")
    assert from_dict(TrainConfig, to_dict(cfg)) == cfg
    d = to_dict(cfg)
    d["model"]["fcos"]["bogus"] = 1
    with pytest.raises(ConfigError, match="model.fcos.bogus"):
        from_dict(TrainConfig, d)


def test_presets_build():
    assert {"fcos_r50_1x", "fcos_ms_r50_2x", "fcos_tiny", "fcos_tiny_test"} <= set(list_presets(all=True))
    for name in ("fcos_tiny", "fcos_tiny_test"):
        assert build_model(get_preset(name).model) is not None
    with pytest.raises(KeyError, match="unknown preset 'nope'; `blendseg presets` lists all") as e:
        get_preset("nope")
    assert "blendmask_r50_1x" not in str(e.value)  # not the 60 names
    with pytest.raises(KeyError, match="did you mean blendmask_tiny"):
        get_preset("blendmask_tinyy")


def test_ablation_preset_rows_build_with_their_bases_stride():
    import torch

    from blendseg.zoo import blendmask_ablation_r50_1x

    rows = [
        ({}, 8),  # Table 1 "28 4 4": DeepLabV3+ on C3, C5
        ({"M": 1}, 8),  # weighted-sum
        ({"blender": "assembler", "K": 16}, 8),
        ({"bottom_in": ("p3", "p5")}, 8),  # Table 4
        ({"bottom_in": ("p2", "p5"), "R": 56, "M": 14, "top_interp": "bilinear", "semantic": True}, 4),  # "+s/4"
        ({"bottom_module": "protonet", "bottom_in": ("p3",), "width": 256}, 4),  # Proto-P3
        ({"bottom_module": "protonet", "bottom_in": ("p3", "p4", "p5")}, 4),  # Proto-FPN
    ]
    for kwargs, stride in rows:
        cfg = blendmask_ablation_r50_1x(**kwargs)
        assert cfg.model.blendmask.bases_stride == stride and cfg.data.with_sem_seg == kwargs.get("semantic", False)
        model = build_model(cfg.model).eval()
        with torch.no_grad():
            assert model([torch.rand(3, 64, 64) * 255]).bases.shape[-1] == 64 // stride, kwargs
