"""Reduced-precision inference: the network under bf16 autocast, decoding and masks in float32."""

import pytest
import torch

import blendseg
from blendseg.inference.precision import autocast, to_float32
from tests.matching import PRESENT, mask_iou, twins


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


@pytest.mark.slow
def test_bf16_predictions_match_fp32(trained, overfit_image):
    """A trained model in bf16: each confident fp32 detection has a bf16 twin (and each confident bf16 one an fp32
    twin) with the same label, a box of IoU > 0.9, a score within 0.05 and a mask of IoU > 0.9 (bf16 keeps about 3
    significant digits in the network; decoding and masks are float32). The scores differ in some digit: bf16 ran."""
    model = blendseg.load(trained("blendmask_tiny_test") / "weights" / "last.pt", "cpu")
    image = overfit_image()
    ref = model.predict(image, conf=PRESENT)[0]
    low = model.predict(image, conf=PRESENT, precision="bf16")[0]
    assert low.boxes.dtype == torch.float32 and low.scores.dtype == torch.float32
    assert not torch.equal(ref.scores[:5], low.scores[:5])
    forward, backward = twins(ref, low), twins(low, ref)
    assert forward, f"the trained model detects its training image's objects with confidence: {ref.scores[:5]}"
    for (x, y), pairs in (((ref, low), forward), ((low, ref), backward)):
        for i, j, iou in pairs:
            assert iou > 0.9, (i, j, iou)
            assert abs(float(x.scores[i]) - float(y.scores[j])) < 0.05
            assert mask_iou(x.masks[i], y.masks[j]) > 0.9


@pytest.mark.slow
def test_cli_precision_flags(trained, overfit_data, tmp_path):
    """``val`` and ``predict`` with ``--precision bf16`` beside fp32: the same detections up to bf16's rounding
    (the k-th best scores within 0.05; as many detections, but for those within 0.05 of the lowest score, which
    may fall either side of a threshold) and not the very same numbers (a flag that were ignored gives those)."""
    import json

    from blendseg.cli import main

    ckpt, img = str(trained("blendmask_tiny_test") / "weights" / "last.pt"), overfit_data.parent / "train" / "images"
    runs = {}
    for p in ("fp32", "bf16"):
        v, o = tmp_path / f"v_{p}", tmp_path / f"p_{p}"
        assert main(["val", ckpt, str(overfit_data), "--split", "train", "--precision", p, "--out", str(v)]) == 0
        assert main(["predict", ckpt, str(img), "--precision", p, "--save-json", "--out", str(o)]) == 0
        val = json.loads((v / "coco_instances_results.json").read_text())
        pred = json.loads((o / "predictions.json").read_text())
        runs[p] = ([r["score"] for r in val], [i["score"] for r in pred for i in r["instances"]])
    for a, b in zip(runs["fp32"], runs["bf16"]):
        assert len(a) > 0 and len(b) > 0 and a != b
        lowest = min(a + b)
        assert sum(x >= lowest + 0.05 for x in a) <= len(b) and sum(x >= lowest + 0.05 for x in b) <= len(a)
        top_a, top_b = sorted(a, reverse=True)[:20], sorted(b, reverse=True)[:20]
        assert max(abs(x - y) for x, y in zip(top_a, top_b)) < 0.05


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
