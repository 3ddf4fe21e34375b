"""int8 export (onnxruntime static quantisation, calibrated on a data.yaml) and ``val`` on exported graphs."""

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime", reason="int8 export needs the onnx extra (pip install 'blendseg[onnx]')")
pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install 'blendseg[onnx]')")
pytestmark = pytest.mark.slow  # exports and calibrates graphs: 30 s before the first test

import blendseg  # noqa: E402
from blendseg.cli import main  # noqa: E402
from blendseg.data.coco import CocoInstances  # noqa: E402
from blendseg.data.sources import load_data  # noqa: E402
from blendseg.engine.checkpoint import save_checkpoint  # noqa: E402
from blendseg.export.quantize import calibration_images, network_nodes, quantize_int8  # noqa: E402
from blendseg.inference.onnx_runtime import OnnxPredictor  # noqa: E402
from blendseg.overrides import to_dict  # noqa: E402
from blendseg.zoo import get_preset  # noqa: E402

from .test_onnx import NAMES, decisive_model  # noqa: E402


@pytest.fixture(scope="module")
def graphs(synth_data, tmp_path_factory):
    """(checkpoint, fp32 graph, int8 graph) of a decisive blendmask_tiny_test model with the synthetic data's
    categories, the int8 one calibrated on 8 of its training images."""
    folder = tmp_path_factory.mktemp("int8")
    split = load_data(synth_data).splits["val"]
    ids = CocoInstances(split.annotations, split.images).contiguous_to_cat_id
    model, cfg = decisive_model("blendmask_tiny_test"), to_dict(get_preset("blendmask_tiny_test"))
    ckpt = save_checkpoint(folder / "model.pt", {
        "model": model.state_dict(), "config": cfg, "iteration": 0, "class_names": NAMES, "contiguous_to_cat_id": ids,
    })  # fmt: skip
    fp32 = blendseg.load(ckpt).export(out=folder / "model.onnx", conf=0.05, max_det=100)
    int8 = quantize_int8(fp32, folder / "model.int8.onnx", calibration_images(str(synth_data), 8))
    return ckpt, fp32, int8


def test_int8_quantises_the_network_and_keeps_its_detections(graphs, synth_data):
    import onnx

    _, fp32, int8 = graphs
    q = onnx.load(str(int8))
    ops = [n.op_type for n in q.graph.node]
    convs = len(network_nodes(onnx.load(str(fp32))))
    assert ops.count("Conv") == convs and ops.count("DequantizeLinear") >= 2 * convs  # weights and inputs in QDQ
    assert "RoiAlign" in ops and "Exp" in ops  # the blender (its softmax written out) stays float
    meta = json.loads(q.metadata_props[0].value)
    calib = meta["calibration"]
    assert meta["precision"] == "int8" and (calib["images"], calib["method"]) == (8, "MinMax")
    assert calib["nodes"] == len(network_nodes(onnx.load(str(fp32)), calib["op_types"])) >= convs
    # the test-time resize's size arithmetic (adds in the preprocess module) stays float: quantised, it rounded the
    # resized size to the calibration's uint8 grid
    source = onnx.load(str(fp32))
    sizes = {
        o for n in source.graph.node if n.op_type == "Add" and "preprocess" in str(n.metadata_props) for o in n.output
    }
    assert sizes and not any(set(n.input) & sizes for n in q.graph.node if n.op_type == "QuantizeLinear")
    image = torch.from_numpy(calibration_images(str(synth_data), 1, "val")[0])
    a, b = (OnnxPredictor(p, conf=0.3)(image) for p in (fp32, int8))
    assert len(a) >= 5
    from torchvision.ops import box_iou

    iou = box_iou(a.boxes, b.boxes)
    same = (iou > 0.8) & (a.labels[:, None] == b.labels[None, :])
    assert same.any(1).float().mean() >= 0.8, (len(a), len(b))  # most fp32 detections have their int8 twin


def test_val_on_exported_graphs_scores_the_graphs_detections(graphs, synth_data, tmp_path, capsys):
    """``val model.onnx`` scores the detections the checkpoint makes image by image (the predictor's; ``val`` on
    the .pt runs padded batches, whose borders move low scorers): the top 20 of each image matched by box and
    class id in the results JSON, so ids and coordinates reach the evaluator as they should."""
    from torchvision.ops import box_iou

    ckpt, fp32, int8 = graphs
    got = blendseg.load(fp32).val(synth_data, out_dir=tmp_path / "onnx")
    assert "errors" in got and got["segm"]["F1_conf"] is not None
    recs = json.loads((tmp_path / "onnx" / "coco_instances_results.json").read_text())
    split = load_data(synth_data).splits["val"]
    ds = CocoInstances(split.annotations, split.images)
    model = blendseg.load(ckpt)
    matched = total = 0
    for info in ds.images:
        res = model.predict(str(Path(split.images) / info["file_name"]), conf=0.05, max_det=20)[0]
        b = sorted((r for r in recs if r["image_id"] == info["id"]), key=lambda r: -r["score"])[:40]
        ids = torch.tensor([ds.contiguous_to_cat_id[int(c)] for c in res.labels])
        xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in b)]).reshape(-1, 4)
        same = ids[:, None] == torch.tensor([r["category_id"] for r in b], dtype=torch.int64)[None, :]
        matched += int(((box_iou(res.boxes, xyxy) > 0.95) & same).any(1).sum())
        total += len(res)
    assert total >= 40 and matched / total >= 0.9, (matched, total)
    assert main(["val", str(int8), str(synth_data)]) == 0
    assert "onnxruntime" in capsys.readouterr().out


def test_int8_export_errors_name_the_problem(graphs, synth_data, tmp_path, capsys):
    ckpt = graphs[0]
    out = tmp_path / "q.onnx"
    assert main(["export", str(ckpt), "--int8", "--out", str(out)]) == 2
    assert "--data" in capsys.readouterr().err and not out.exists()
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "images" / "broken.jpg").write_bytes(b"not an image")
    ann = {"images": [{"id": 1, "file_name": "broken.jpg", "height": 8, "width": 8}], "annotations": [],
           "categories": [{"id": 1, "name": "thing"}]}  # fmt: skip
    (empty / "ann.json").write_text(json.dumps(ann))
    (empty / "data.yaml").write_text(f"path: {empty}\ntrain:\n  images: images\n  annotations: ann.json\n")
    with pytest.warns(UserWarning, match="unreadable"):
        rc = main(["export", str(ckpt), "--int8", "--data", str(empty / "data.yaml"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and "no readable image" in err and str(empty / "data.yaml") in err, err
    assert not out.exists() and list(tmp_path.glob("*.onnx*")) == []


def test_keep_float_leaves_the_named_modules_in_float(graphs, synth_data, tmp_path):
    import onnx

    fp32 = onnx.load(str(graphs[1]))
    convs, kept = network_nodes(fp32), network_nodes(fp32, ("Conv",), ("cls_logits",))
    logits = [n for n in fp32.graph.node if n.op_type == "Conv" and "cls_logits" in str(n.metadata_props)]
    assert logits and len(kept) == len(convs) - len(logits)
    q = onnx.load(str(quantize_int8(graphs[1], tmp_path / "q.onnx", calibration_images(str(synth_data), 2),
                                    keep_float=("cls_logits",))))  # fmt: skip
    made_by = {out: n.op_type for n in q.graph.node for out in n.output}
    int8_weights = [n for n in q.graph.node if n.op_type == "Conv" and made_by.get(n.input[1]) == "DequantizeLinear"]
    assert len(int8_weights) == len(kept)  # every other conv has int8 weights, the logits' convs float ones


def test_int8_on_a_cpu_without_vnni_uses_7_bit_weights_and_says_so(graphs, synth_data, tmp_path, monkeypatch):
    """Without VNNI onnxruntime's uint8 x int8 products can saturate: the export quantises the weights to 7 bits
    (one warning line naming the instructions); a graph made elsewhere without that warns where it runs."""
    import blendseg.export.quantize as quantize
    import blendseg.inference.onnx_runtime as runtime
    from blendseg.inference.precision import missing_instructions

    no_vnni = lambda precision: missing_instructions(precision, frozenset({"avx2", "avx512f"}))  # noqa: E731
    monkeypatch.setattr(quantize, "missing_instructions", no_vnni)
    with pytest.warns(UserWarning, match="avx512_vnni.*reduce_range"):
        q = quantize_int8(graphs[1], tmp_path / "q.onnx", calibration_images(str(synth_data), 2))
    import onnx

    meta = json.loads(onnx.load(str(q)).metadata_props[0].value)
    assert meta["calibration"]["reduce_range"] is True
    full = quantize_int8(graphs[1], tmp_path / "full.onnx", calibration_images(str(synth_data), 2), reduce_range=False)
    monkeypatch.setattr(runtime, "missing_instructions", no_vnni)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnnxPredictor(q)  # 7-bit weights: safe on it
    with pytest.warns(UserWarning, match="saturate.*--int8 on this machine"):
        OnnxPredictor(full)  # as if exported on a VNNI machine


def test_a_missing_runtime_is_one_line_naming_the_extra(graphs, synth_data, tmp_path, capsys, monkeypatch):
    """No OpenVINO: ``export --format openvino`` says which extra to install before spending the export, and
    writes nothing; no onnxruntime: ``val model.onnx`` says so too (one line each, no traceback)."""
    ckpt, fp32, _ = graphs
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    out = tmp_path / "m.xml"
    assert main(["export", str(ckpt), "--format", "openvino", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "error: OpenVINO models need openvino: pip install 'blendseg[openvino]'", err
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert main(["val", str(fp32), str(synth_data)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: running an ONNX model needs onnxruntime: pip install 'blendseg[onnx]'"]


def test_val_refuses_a_graph_of_other_categories(graphs, synth_data, tmp_path):
    split = load_data(synth_data).splits["val"]
    coco = json.loads(Path(split.annotations).read_text())
    for rec in coco["categories"] + coco["annotations"]:
        key = "id" if "name" in rec else "category_id"
        rec[key] += 100  # the same pictures under other category ids
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    (tmp_path / "data.yaml").write_text(f"path: {tmp_path}\nval:\n  images: {split.images}\n  annotations: ann.json\n")
    with pytest.raises(Exception, match="exported for categories"):
        blendseg.load(graphs[1]).val(tmp_path / "data.yaml")


def test_openvino_runs_the_graph_as_onnxruntime_does(graphs, synth_data, tmp_path):
    """``export --format openvino``: OpenVINO's IR of the same graph gives onnxruntime's detections (fp32: the same
    boxes and classes; bf16 on CPUs that have it: the same classes for most boxes), behind the same interface."""
    pytest.importorskip("openvino", reason="the OpenVINO runner needs pip install 'blendseg[openvino]'")
    from torchvision.ops import box_iou

    from blendseg.export.onnx import to_openvino
    from blendseg.inference.onnx_runtime import OpenVinoPredictor

    xml = to_openvino(graphs[1], tmp_path / "model.xml")
    model = blendseg.load(xml)
    assert model.names[0] == NAMES[0] and (tmp_path / "model.bin").is_file()
    image = torch.from_numpy(calibration_images(str(synth_data), 1, "val")[0])
    a = OnnxPredictor(graphs[1], conf=0.3)(image)
    b = model.predict(image.permute(1, 2, 0).numpy(), conf=0.3)[0]
    assert len(a) >= 5 and len(b) == len(a)
    torch.testing.assert_close(b.boxes, a.boxes, atol=0.05, rtol=1e-3)
    assert torch.equal(b.labels, a.labels) and (b.masks != a.masks).float().mean() < 0.002
    try:
        c = OpenVinoPredictor(xml, conf=0.3, precision="bf16")(image)
    except ValueError as e:  # a CPU without bf16: the one-line refusal
        assert "bf16 instructions" in str(e)
        return
    iou = box_iou(a.boxes, c.boxes)
    same = (iou > 0.8) & (a.labels[:, None] == c.labels[None, :])
    assert same.any(1).float().mean() >= 0.8
