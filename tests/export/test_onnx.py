"""ONNX export end to end: the exported graph run by onnxruntime gives PyTorch's detections, for each method."""

import copy
import importlib.util

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="ONNX tests need the onnx extra (pip install 'blendseg[onnx]')")
pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install 'blendseg[onnx]')")
pytestmark = pytest.mark.slow  # each export traces and converts a model: 10-50 s

from blendseg.engine.checkpoint import save_checkpoint  # noqa: E402
from blendseg.export.graph import image_graph  # noqa: E402
from blendseg.overrides import to_dict  # noqa: E402
from blendseg.zoo import build_model, get_preset, suite_presets  # noqa: E402

NAMES = ["circle", "rectangle", "triangle", "ellipse", "star", "ring"]
SIZES = [(150, 90), (333, 500)]  # both resized by the test pipeline, different aspect ratios


def decisive_model(preset: str) -> torch.nn.Module:
    """Random weights made to detect things with distinct scores and confident masks (so that a near tie cannot
    decide a comparison): larger prediction weights, a fitted-looking PCA for MEInst."""
    torch.manual_seed(0)
    model = build_model(get_preset(preset).model).eval()
    with torch.no_grad():
        if hasattr(model, "fcos"):
            head = model.fcos.head
            torch.nn.init.normal_(head.cls_logits.weight, std=0.3)
            torch.nn.init.constant_(head.cls_logits.bias, -1.0)
            torch.nn.init.normal_(head.bbox_pred.weight, std=0.1)
            torch.nn.init.constant_(head.bbox_pred.bias, 2.0)
        if hasattr(model, "basis_module"):
            last = [m for m in model.basis_module.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            torch.nn.init.normal_(last.weight, std=1.0)
            model.fcos.head.embed_head.weight.mul_(30)
        if hasattr(model, "mask_encoding"):
            c = model.mask_encoding
            c.load_fit(torch.randn_like(c.components) * 1.0, torch.rand_like(c.explained_variances) + 0.5,
                       torch.randn_like(c.means) * 4)  # fmt: skip
            head = model.fcos.head.embed_head.mask_pred
            torch.nn.init.normal_(head.weight, std=0.5)
        if hasattr(model, "prediction_layers"):
            layer = model.prediction_layers[0]
            torch.nn.init.normal_(layer.conf_layer.weight, std=0.2)
            layer.conf_layer.bias.view(-1, len(NAMES) + 1)[:] = torch.tensor([1.0, 0.5, 0, 0, 1, 0, 0])
            torch.nn.init.normal_(layer.mask_layer.weight, std=0.3)
    return model


@pytest.fixture(scope="module", params=suite_presets(masks=True))
def exported(request, tmp_path_factory):
    """(checkpoint, onnx file, model, cfg) of a decisive random model of each method."""
    cfg = get_preset(request.param)
    model = decisive_model(request.param)
    folder = tmp_path_factory.mktemp(request.param)
    ckpt = save_checkpoint(folder / "model.pt", {"model": model.state_dict(), "config": to_dict(cfg), "iteration": 0,
                                                "class_names": NAMES})  # fmt: skip
    import blendseg

    onnx_path = blendseg.load(ckpt).export(conf=0.3, max_det=50, dense_masks=True)
    return ckpt, onnx_path, model, cfg


def _image(h, w, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (3, h, w), dtype=np.uint8))


def assert_same_detections(a, b, box_rtol=1e-3, min_mask_iou=0.99, score_atol=1e-4, ambiguous=None):
    """a, b: (boxes, scores, labels[, masks]) numpy. Same number of detections; each of a matched to b's of the same
    label and closest box (near-equal scores may swap places), box corners within ``box_rtol`` x the box's larger
    side or coordinate, scores within ``score_atol``, per instance mask IoU >= ``min_mask_iou``; with
    ``ambiguous`` (b's (N, H, W) pixels whose probability is at the threshold) the masks equal everywhere else."""
    assert len(a[0]) == len(b[0]), f"{len(a[0])} vs {len(b[0])} detections"
    free = set(range(len(b[0])))
    for i in range(len(a[0])):
        cands = [j for j in free if b[2][j] == a[2][i]]
        assert cands, f"detection {i}: no label {a[2][i]} left"
        j = min(cands, key=lambda j: np.abs(a[0][i] - b[0][j]).max())
        free.remove(j)
        box = b[0][j]
        tol = box_rtol * max(box[2] - box[0], box[3] - box[1], np.abs(box).max(), 1)
        assert np.all(np.abs(a[0][i] - b[0][j]) <= tol), f"box {a[0][i]} vs {b[0][j]}"
        assert abs(a[1][i] - b[1][j]) <= score_atol
        if len(a) > 3:
            ma, mb = a[3][i].astype(bool), b[3][j].astype(bool)
            union = (ma | mb).sum()
            if ambiguous is not None:
                flipped = int(((ma ^ mb) & ~ambiguous[j]).sum())
                assert flipped == 0, f"{flipped} mask pixels differ away from the threshold"
            else:
                assert union == 0 or (ma & mb).sum() / union >= min_mask_iou, f"mask IoU {(ma & mb).sum() / union}"


def test_onnxruntime_equals_pytorch(exported):
    import onnxruntime as ort

    _, path, model, cfg = exported
    session = ort.InferenceSession(str(path))
    graph = image_graph(model, cfg, conf=0.3, max_det=50)
    for h, w in SIZES:
        image = _image(h, w)
        ours = session.run(None, {"image": image.numpy()})
        with torch.no_grad():
            ref = [t.numpy() for t in graph(image)]
        assert len(ours) == 4 and ours[3].shape == (len(ours[0]), h, w) and ours[3].dtype == np.uint8
        assert ours[0].dtype == np.float32 and ours[2].dtype == np.int64
        assert len(ours[0]) >= 3, "the test model should detect something"
        assert_same_detections(ours, ref)


def _result_arrays(r):
    return r.boxes.numpy(), r.scores.numpy(), r.labels.numpy(), r.masks.numpy()


@pytest.mark.parametrize("preset", suite_presets(masks=True))
def test_graph_is_the_predictor_pipeline(preset):
    """The export graph in PyTorch against the Predictor (what predict / val run) on an image that needs no resize:
    the same boxes and scores; masks the same but for pixels on the 0.5 threshold (within 1e-5: the random bases
    are exactly 0 where RoIAlign samples outside them, so many pasted probabilities are 0.5 to one ulp), which
    grid_sample and the separable paste round to either side."""
    from blendseg.inference.predictor import Predictor
    from blendseg.inference.result import Categories

    cfg, model = get_preset(preset), decisive_model(preset)
    graph = image_graph(model, cfg, conf=0.3, max_det=50)
    predictor = Predictor(model, cfg, Categories(NAMES, list(range(1, 7))), conf=0.3, max_det=50)
    h, w = (128, 128) if cfg.data.square_size else (cfg.data.min_size_test, cfg.data.max_size_test)
    image = _image(h, w, seed=1)
    with torch.no_grad():
        ours = [t.numpy() for t in graph(image)]
    assert len(ours[0]) >= 3
    r = predictor(image)
    below, above = copy.copy(r.compact_masks), copy.copy(r.compact_masks)
    below.threshold, above.threshold = below.threshold - 1e-5, above.threshold + 1e-5
    ambiguous = (below.to_tensor() ^ above.to_tensor()).numpy()
    assert (r.masks.numpy() & ~ambiguous).sum() > 1000  # plenty of pixels left to compare
    assert_same_detections(ours, _result_arrays(r), box_rtol=1e-6, score_atol=1e-6, ambiguous=ambiguous)


@pytest.mark.parametrize("preset", ["blendmask_tiny", "yolact_tiny"])
def test_graph_resize_is_the_test_pipeline(preset):
    """Same resized size as the eager test pipeline for any shape, and pixels within one grey level (the eager
    pipeline resizes uint8 with fixed-point weights and rounds, the graph resizes in float)."""
    from blendseg.export.graph import Preprocess
    from blendseg.inference.predictor import resize_for_test

    cfg = get_preset(preset)
    pre = Preprocess(cfg)
    rng = np.random.default_rng(0)
    for h, w in [(20, 20), (256, 320), (333, 500), (1080, 810), (4000, 90), *rng.integers(16, 1500, (12, 2))]:
        image = _image(int(h), int(w))
        ref = resize_for_test(cfg, image).float()
        x, (rh, rw) = pre(image)
        assert (rh, rw) == tuple(ref.shape[-2:])
        assert (
            x.shape[-2] % max(cfg.model.size_divisibility, 1) == 0
            and x.shape[-1] % max(cfg.model.size_divisibility, 1) == 0
        )
        pixels = x[0, :, :rh, :rw] * pre.std[0] + pre.mean[0]
        pixels = pixels.flip(0) if pre.bgr else pixels
        assert (pixels - ref).abs().max() <= 1.01  # the eager rounding (<= 0.5) plus its fixed-point error
        assert (x[0, :, rh:, :] == 0).all() and (x[0, :, :, rw:] == 0).all()  # zero padding after normalising


def test_deformable_models_export_at_opset_19(tmp_path):
    """YOLACT++'s deformable backbone: ONNX DeformConv (opset 19, chosen by default; 18 is refused)."""
    import dataclasses

    import onnxruntime as ort

    from blendseg.export.onnx import export_onnx, read_metadata
    from blendseg.inference.result import Categories

    cfg = get_preset("yolact_tiny_test")
    bb = dataclasses.replace(
        cfg.model.backbone, depth=50, deform_on_per_stage=(False, False, True, True), deform_modulated=True,
        deform_interval=1, deform_bias=True,
    )  # fmt: skip
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=bb))
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    cats = Categories(NAMES, list(range(1, 7)))
    with pytest.raises(ValueError, match="DeformConv needs opset >= 19"):
        export_onnx(model, cfg, cats, tmp_path / "m18.onnx", opset=18)
    path = export_onnx(model, cfg, cats, tmp_path / "m.onnx", conf=0.0, max_det=20, dense_masks=True)
    assert read_metadata(path)["opset"] == 19
    image = _image(100, 140)
    ours = ort.InferenceSession(str(path)).run(None, {"image": image.numpy()})
    with torch.no_grad():
        ref = [t.numpy() for t in image_graph(model, cfg, conf=0.0, max_det=20)(image)]
    assert len(ours[0]) == 20
    assert_same_detections(ours, ref)
    # for OpenVINO, whose converter has no DeformConv: the same convs as GridSample + MatMul, opset 18
    flat = export_onnx(model, cfg, cats, tmp_path / "flat.onnx", conf=0.0, max_det=20, dense_masks=True,
                       deform_conv_op=False)  # fmt: skip
    import onnx

    ops = {n.op_type for n in onnx.load(str(flat)).graph.node}
    assert read_metadata(flat)["opset"] == 18 and "DeformConv" not in ops and "GridSample" in ops
    assert_same_detections(ort.InferenceSession(str(flat)).run(None, {"image": image.numpy()}), ref)
    if importlib.util.find_spec("openvino"):
        from blendseg.export.onnx import to_openvino
        from blendseg.inference.onnx_runtime import OpenVinoPredictor

        runner = OpenVinoPredictor(to_openvino(flat, tmp_path / "flat.xml"), conf=0.0, max_det=20)
        assert_same_detections(runner._run(image.numpy()), ref)


def test_load_predict_and_cli_on_an_onnx_file(exported, tmp_path, capsys):
    """blendseg.load("x.onnx") and `blendseg predict x.onnx` run the graph with onnxruntime: Results as the .pt
    checkpoint's, thresholds filtered further, a warning when asked for what the graph dropped."""
    import json

    from PIL import Image

    import blendseg
    from blendseg.cli import main

    ckpt, path, _, _ = exported
    onnx_model, torch_model = blendseg.load(path), blendseg.load(ckpt)
    assert onnx_model.names == torch_model.names and onnx_model.names[0] == "circle"
    image = _image(120, 100).permute(1, 2, 0).numpy()
    everything = onnx_model.predict(image, conf=0.3)[0]
    assert len(everything) >= 3 and everything.masks.shape == (len(everything), 120, 100)
    middle = float(everything.scores[len(everything) // 2])
    r = onnx_model.predict(image, conf=middle, max_det=2)[0]
    assert len(r) == 2 and r.scores.min() >= middle
    session = onnx_model.predictor(conf=middle, max_det=2)  # a loop of calls opens the graph once
    onnx_model.predict(image, conf=middle, max_det=2)
    assert onnx_model.predictor(conf=middle, max_det=2) is session
    assert r.plot().shape == (120, 100, 3) and r.to_coco(3)[0]["image_id"] == 3
    with pytest.warns(UserWarning, match="exported with conf=0.3: detections scoring below"):
        onnx_model.predict(image, conf=0.1)
    with pytest.raises(NotImplementedError, match=r"export from the \.pt checkpoint"):
        onnx_model.export()
    Image.fromarray(image).save(tmp_path / "a.png")
    assert main(["predict", str(path), str(tmp_path / "a.png"), "--out", str(tmp_path / "out"), "--save-json"]) == 0
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert records[0]["image_size"] == [120, 100] and records[0]["instances"][0]["class"] in NAMES
    assert (tmp_path / "out" / "a_pred.png").is_file()


def test_export_cli_and_an_empty_output(checkpoint, tmp_path, capsys):
    """`blendseg export` writes next to the checkpoint by default; nothing over conf gives empty outputs of the
    right shapes."""
    import shutil

    import onnxruntime as ort

    from blendseg.cli import main

    ckpt = shutil.copy(checkpoint, tmp_path / "model.pt")
    assert main(["export", str(ckpt), "--conf", "1.01", "--dense-masks"]) == 0
    assert "boxes, scores, labels, masks" in capsys.readouterr().out
    outs = ort.InferenceSession(str(tmp_path / "model.onnx")).run(None, {"image": _image(90, 70).numpy()})
    assert [o.shape for o in outs] == [(0, 4), (0,), (0,), (0, 90, 70)]


@pytest.mark.parametrize("preset", ["blendmask_tiny_test", "yolact_tiny_test"])
def test_compact_mask_export(preset, tmp_path):
    """The default export: the graph returns per-box probabilities (BlendMask / MEInst: + paste boxes) or YOLACT's
    cropped prototype masks, and the runner pastes them per instance as the PyTorch path does."""
    from blendseg.export.onnx import export_onnx, read_metadata
    from blendseg.inference.onnx_runtime import OnnxPredictor
    from blendseg.inference.result import Categories
    from blendseg.structures import BoxMasks, GridMasks

    cfg, model = get_preset(preset), decisive_model(preset)
    path = export_onnx(model, cfg, Categories(NAMES, list(range(1, 7))), tmp_path / "m.onnx", conf=0.3, max_det=50)
    meta = read_metadata(path)
    assert meta["masks"] == ("grid" if "yolact" in preset else "box")
    image = _image(150, 90)
    r = OnnxPredictor(path, conf=0.3, max_det=50)(image)
    assert isinstance(r.compact_masks, GridMasks if "yolact" in preset else BoxMasks) and r._masks is None
    with torch.no_grad():
        out = image_graph(model, cfg, conf=0.3, max_det=50, dense=False)(image)
    masks = GridMasks(out[3], (150, 90), (150, 90)) if "yolact" in preset else BoxMasks(out[3], out[4], (150, 90))
    ref = [t.numpy() for t in out[:3]] + [masks.to_tensor().numpy()]
    import onnxruntime as ort

    raw = ort.InferenceSession(str(path)).run(None, {"image": image.numpy()})
    assert len(raw[0]) == len(out[0]) and np.abs(raw[3] - out[3].numpy()).max() < 1e-4  # the compact outputs
    # pixels: the random bases leave ~15 % of the probabilities within 1e-4 of 0.5 (zero logits where RoIAlign
    # samples outside the bases), so float error flips some pixels; the probabilities above are the real check
    assert_same_detections(_result_arrays(r), ref, min_mask_iou=0.9)


def test_cuda_without_the_cuda_provider_says_so(exported):
    """device="cuda" with an onnxruntime that has no CUDA provider runs on the CPU, and says so (it used to be
    silent), naming the package that has the provider."""
    import onnxruntime as ort

    from blendseg.inference.onnx_runtime import OnnxPredictor

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    with pytest.warns(UserWarning, match="no CUDA provider.*onnxruntime-gpu"):
        predictor = OnnxPredictor(exported[1], device="cuda")
    assert predictor.session.get_providers() == ["CPUExecutionProvider"]
