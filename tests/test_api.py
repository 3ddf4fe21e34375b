"""The Python API: blendseg.load, Model.predict on every kind of source, Result and its exports."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import blendseg


def _photo(h=90, w=120, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_predict_sources_and_result_fields(checkpoint, tmp_path):
    model = blendseg.load(checkpoint)
    assert model.names[0] == "circle"
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(_photo(seed=i)).save(folder / f"p{i}.png")
    (folder / "notes.txt").write_text("not an image")
    sources = [_photo(), Image.fromarray(_photo(70, 50)), str(folder / "p0.png"), str(folder), str(folder / "*.png")]
    results = model.predict(sources, conf=0.0, max_det=7)
    assert [r.path is None for r in results] == [True, True, False, False, False, False, False]
    r = results[1]
    assert r.image_size == (70, 50) and len(r) == 7  # max_det
    assert r.boxes.shape == (7, 4) and r.boxes.dtype == torch.float32 and r.labels.dtype == torch.int64
    assert torch.all(r.scores[:-1] >= r.scores[1:]) and set(r.speed) == {"preprocess", "inference", "postprocess"}
    assert r._masks is None  # not made until asked for
    assert r.masks.shape == (7, 70, 50) and r.masks.dtype == torch.bool
    assert r.plot().shape == (70, 50, 3) and r.plot().dtype == np.uint8
    assert r[0].boxes.shape == (1, 4) and len(r[2:5]) == 3
    coco = r.to_coco(image_id=5)
    assert len(coco) == 7 and {c["category_id"] for c in coco} <= set(range(11, 17)) and coco[0]["image_id"] == 5
    assert "counts" in coco[0]["segmentation"] and len(coco[0]["bbox"]) == 4
    rec = json.loads(r.to_json())
    assert rec["image_size"] == [70, 50] and rec["instances"][0]["class"] in model.names.values()
    assert r.save(tmp_path / "drawn.png").is_file()
    high = model.predict(_photo(), conf=2.0)[0]
    assert len(high) == 0 and high.masks.shape == (0, 90, 120)


def test_stream_is_lazy_and_presets_load_with_random_weights():
    """``stream=True`` gives a generator that reads an image only when the caller asks for its result (memory does
    not grow with the number of frames)."""
    import inspect

    model = blendseg.load("yolact_tiny_test")
    pulled = []

    def frames():
        for k in range(3):
            pulled.append(k)
            yield _photo(seed=k)

    stream = model.predict(frames(), conf=0.0, stream=True)
    assert inspect.isgenerator(stream) and pulled == []
    first = next(stream)
    assert pulled == [0] and first.masks is not None and first.masks.shape[1:] == (90, 120)
    assert len(list(stream)) == 2 and pulled == [0, 1, 2]
    with pytest.raises(FileNotFoundError, match="neither a checkpoint"):
        blendseg.load("no_such_preset_or_file")


def test_unreadable_files_are_skipped_with_a_warning(checkpoint, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    with pytest.warns(UserWarning, match="bad.jpg: cannot read image"):
        results = blendseg.load(checkpoint).predict([str(bad), _photo()])
    assert len(results) == 1


def test_val_returns_the_metrics(checkpoint, synth_data, tmp_path):
    model = blendseg.load(checkpoint)
    metrics = model.val(synth_data)
    assert set(metrics) == {"bbox", "segm"} and "AP" in metrics["segm"]
    with_report = model.val(synth_data, out_dir=tmp_path / "val", save_worst=1)  # what `blendseg val --out` writes
    assert set(with_report["errors"]) == {"bbox", "segm"} and with_report["segm"]["AP"] == metrics["segm"]["AP"]
    assert (tmp_path / "val" / "coco_instances_results.json").is_file()
    assert len(list((tmp_path / "val" / "worst").glob("*.png"))) == 1


@pytest.mark.slow
def test_supervision_bridge_passes_boxes_masks_scores_and_classes(trained, overfit_image, monkeypatch):
    """The real supervision (in the dev extra): its Detections hold a trained model's boxes, masks, scores, label
    ids and names row for row, and its mask annotator draws them."""
    import sys

    sv = pytest.importorskip("supervision")
    image = overfit_image()
    r = blendseg.load(trained("blendmask_tiny_test") / "weights" / "last.pt").predict(image, conf=0.5)[0]
    d = r.to_supervision()
    assert isinstance(d, sv.Detections) and len(d) == len(r) >= 1 and r.masks.any()
    np.testing.assert_array_equal(d.xyxy, r.boxes.numpy())
    np.testing.assert_array_equal(d.mask, r.masks.numpy())
    np.testing.assert_array_equal(d.confidence, r.scores.numpy())
    np.testing.assert_array_equal(d.class_id, r.labels.numpy())
    assert list(d.data["class_name"]) == [r.names[int(c)] for c in r.labels]
    drawn = sv.MaskAnnotator().annotate(np.ascontiguousarray(image.copy()), d)
    assert drawn.shape == image.shape and (drawn != image).any()
    monkeypatch.setitem(sys.modules, "supervision", None)
    with pytest.raises(ImportError, match="pip install supervision"):
        r.to_supervision()


def test_train_fine_tunes_from_weights_with_overrides(checkpoint, synth_data, tmp_path, capsys):
    """blendseg.train is the train command: weights recognised and reported, overrides as a dict, metrics back."""
    overrides = {"solver.max_iter": 1, "data.num_workers": 0, "solver.ims_per_batch": 8}
    run = tmp_path / "run"
    metrics = blendseg.train("blendmask_tiny_test", synth_data, run, weights=checkpoint, overrides=overrides)
    out = capsys.readouterr().out
    assert f"from {checkpoint} (a blendseg checkpoint)" in out
    assert "base_lr 0.002 -> 0.004" in out  # ims_per_batch 8 against the preset's 2: sqrt(4) for AdamW
    assert "segm" in metrics and (run / "weights" / "last.pt").is_file()
    assert json.loads((run / "metrics.json").read_text())["segm"] == metrics["segm"]


def test_a_model_keeps_its_predictor_until_the_settings_change():
    model = blendseg.load("fcos_tiny_test", device="cpu")
    first = model.predictor(conf=0.3)
    model.predict(_photo(seed=1), conf=0.3)
    assert model.predictor(conf=0.3) is first
    assert model.predictor(conf=0.5) is not first  # conf, max_det, device and precision each make a new one
    again = model.predictor(conf=0.5)
    assert model.predictor(conf=0.5, max_det=10) is not again


def test_a_loaded_model_trains_on_new_data_and_becomes_the_trained_one(checkpoint, synth_data, tmp_path, capsys):
    """ultralytics' ``YOLO("best.pt").train(data=...)``: the loaded model's config and weights, overrides, and the
    model is the run's afterwards."""
    model = blendseg.load(checkpoint, device="cpu")
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    metrics = model.train(synth_data, tmp_path / "run", overrides={"solver.max_iter": 2, "data.num_workers": 0})
    assert f"from {checkpoint} (a blendseg checkpoint)" in capsys.readouterr().out
    assert "segm" in metrics and model.checkpoint in {
        str(tmp_path / "run" / "weights" / n) for n in ("best.pt", "last.pt")
    }
    after = model.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if after[k].is_floating_point())
    assert len(model.predict(_photo(seed=2), conf=0.0)[0]) > 0


def test_one_table_of_exported_formats():
    from blendseg.inference.onnx_runtime import FORMATS, OnnxPredictor, OpenVinoPredictor, exported_format, format_named

    assert exported_format("runs/x/model.int8.onnx").runner is OnnxPredictor
    assert exported_format("m.XML").runner is OpenVinoPredictor and exported_format("best.pt") is None
    assert [f.name for f in FORMATS.values()] == ["onnx", "openvino"] and format_named("openvino").suffix == ".xml"
    with pytest.raises(ValueError, match="export format 'tflite': 'onnx' or 'openvino'"):
        blendseg.load("fcos_tiny_test", device="cpu").export(format="tflite")
