"""Reduced-precision inference: the network under bf16 autocast, decoding and masks in float32."""

import numpy as np
import pytest
import torch

import blendseg
from blendseg.inference.precision import autocast, to_float32


def test_to_float32_reaches_into_outputs_and_fp16_needs_cuda():
    from blendseg.modeling.methods.yolact import YolactOutput

    bf = torch.ones(2, 3, dtype=torch.bfloat16)
    out = YolactOutput(bf, bf, bf, bf, torch.ones(2, 4), [(4, 4)], (4, 4), losses={"a": bf})
    conv = to_float32({"x": [out, (bf, torch.ones(1, dtype=torch.int64))]})
    y = conv["x"][0]
    assert y.loc.dtype == y.proto.dtype == y.losses["a"].dtype == torch.float32 and y.image_sizes == [(4, 4)]
    assert conv["x"][1][1].dtype == torch.int64
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        autocast("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast("int8", torch.device("cpu"))


def test_bf16_predictions_match_fp32(checkpoint):
    """The same model in bf16: the confident detections and their masks agree with fp32's (bf16 keeps about 3
    significant digits in the network; decoding and masks are float32)."""
    model = blendseg.load(checkpoint)
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    ref = model.predict(image, conf=0.0, max_det=20)[0]
    low = model.predict(image, conf=0.0, max_det=20, precision="bf16")[0]
    assert low.boxes.dtype == torch.float32 and low.scores.dtype == torch.float32 and len(low) == len(ref) == 20
    matched = 0
    for box, label in zip(ref.boxes[:5], ref.labels[:5]):
        close = ((low.boxes - box).abs().max(1).values < 2.0) & (low.labels == label)
        matched += bool(close.any())
    assert matched >= 4
    assert torch.allclose(low.scores.sort(descending=True).values[:5], ref.scores[:5], atol=0.02)


def test_cli_precision_flags(checkpoint, synth_data, tmp_path):
    from blendseg.cli import main

    assert main(["val", str(checkpoint), str(synth_data), "--precision", "bf16", "--out", str(tmp_path / "v")]) == 0
    assert (tmp_path / "v" / "metrics.json").is_file()
    img = synth_data.parent / "val" / "images"
    assert main(["predict", str(checkpoint), str(img), "--precision", "bf16", "--out", str(tmp_path / "p")]) == 0


def test_bf16_with_deformable_convolutions():
    """torchvision's deform_conv2d has no bf16 CPU kernel: it runs in float32 inside the bf16 network."""
    import dataclasses

    from blendseg.inference.predictor import Predictor
    from blendseg.inference.result import Categories
    from blendseg.zoo import build_model, get_preset

    cfg = get_preset("yolact_tiny_test")
    bb = dataclasses.replace(
        cfg.model.backbone, depth=50, deform_on_per_stage=(False, False, True, True), deform_modulated=True,
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=bb))
    model = build_model(cfg.model)
    image = torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8)
    cats = Categories([str(i) for i in range(6)], list(range(1, 7)))
    r = Predictor(model, cfg, cats, conf=0.0, precision="bf16")(image)
    assert r.boxes.dtype == torch.float32 and r.masks.shape[1:] == (90, 120)


def test_missing_instructions_names_what_a_precision_needs(monkeypatch):
    from blendseg.inference import precision

    assert precision.missing_instructions("int8", frozenset({"avx2", "avx512f", "avx512_vnni"})) is None
    assert precision.missing_instructions("bf16", frozenset({"amx_bf16"})) is None
    reason = precision.missing_instructions("int8", frozenset({"avx2", "avx512f"}))
    assert "avx512_vnni" in reason and "int8" in reason
    assert "avx512_bf16" in precision.missing_instructions("bf16", frozenset({"avx2"}))
    assert precision.missing_instructions("fp32", frozenset()) is None  # fp32 needs nothing special
    monkeypatch.setattr(precision, "cpu_flags", lambda: None)  # unknown CPU (another OS): no claim either way
    assert precision.missing_instructions("int8") is None
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.warns(UserWarning, match="avx512_bf16.*emulated"):
        blendseg.load("blendmask_tiny_test", "cpu").predictor(precision="bf16")
