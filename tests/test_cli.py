"""End-to-end CLI: synth -> check -> train (2 iterations) -> resume -> val -> convert."""

import json
import os
import subprocess
import sys

import pytest
import torch

from blendseg.cli import main
from blendseg.engine.checkpoint import load_checkpoint
from blendseg.engine.runner import load_model

from .conftest import reference_dir


def test_train_resume_val(tmp_path, synth_data, capsys):
    out = tmp_path / "run"
    assert main(["train", "fcos_tiny_test", str(synth_data), "--out", str(out), "solver.max_iter=2"]) == 0
    assert (out / "config.yaml").is_file() and (out / "metrics.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["bbox"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    ck = load_checkpoint(out / "weights" / "last.pt")
    assert ck["iteration"] == 2 and ck["class_names"][0] == "circle"
    assert (
        main(
            [
                "train",
                "fcos_tiny_test",
                str(synth_data),
                "--out",
                str(out),
                "--resume",
                "solver.max_iter=3",
                "--no-eval",
            ]
        )
        == 0
    )
    assert load_checkpoint(out / "weights" / "last.pt")["iteration"] == 3
    assert "resumed from" in capsys.readouterr().out
    assert main(["val", str(out / "weights" / "last.pt"), str(synth_data), "--out", str(tmp_path / "val")]) == 0
    assert (tmp_path / "val" / "metrics.json").is_file()


def test_bad_inputs_give_messages_not_tracebacks(tmp_path, synth_data, capsys):
    assert main(["train", "fcos_tiny_test", str(synth_data), "solver.max_iterz=2"]) == 1
    assert "unknown config key 'solver.max_iterz'" in capsys.readouterr().err
    bad = tmp_path / "ann.json"
    bad.write_text(
        '{"images": [{"id": 1, "file_name": "x.jpg", "height": 5, "width": 5}], "categories": [{"id": 1}], '
        '"annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1]}]}'
    )
    assert main(["data", "check", str(bad), "--images", str(tmp_path)]) == 1
    text = capsys.readouterr().out
    assert "unknown category_id 2" in text and "image file(s) missing" in text
    (tmp_path / "d.yaml").write_text(f"path: {tmp_path}\ntrain: {{images: ., annotations: ann.json}}\n")
    assert main(["train", "fcos_tiny_test", str(tmp_path / "d.yaml"), "--out", str(tmp_path / "r")]) == 1
    assert "unknown category_id 2" in capsys.readouterr().err


@pytest.mark.slow  # subprocesses
def test_console_script_and_convert(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "blendseg")
    r = subprocess.run([exe, "presets"], capture_output=True, text=True, check=True)
    assert "fcos_r50_1x" in r.stdout
    d = reference_dir("blendmask_r18_tiny")
    r = subprocess.run(
        [
            exe,
            "convert",
            "--from",
            "adelaidet",
            "--config",
            str(d / "config.yaml"),
            "--weights",
            str(d / "weights.safetensors"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    ck = load_checkpoint(tmp_path / "model.pt")
    assert ck["config"]["model"]["backbone"]["depth"] == 18 and "fcos.head.cls_logits.weight" in ck["model"]
    model, cfg, _ = load_model(tmp_path / "model.pt")  # strict load of the converted weights
    assert cfg.model.fcos.thresh_with_ctr and not model.training


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path, synth_data):
    """Real multi-process training (gloo on CPU) through torchrun; with ims_per_process=2 two processes double the
    step batch, so the preset's 4 iterations (for its batch of 2) become 2 (solver.reference_batch)."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29531",
        "-m",
        "blendseg.cli",
        "train",
        "fcos_tiny_test",
        str(synth_data),
        "--out",
        str(out),
        "solver.ims_per_process=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_checkpoint(out / "weights" / "last.pt")["iteration"] == 2
    assert "solver for a step batch of 4 (2 x 2) for 2: base_lr 0.002 -> 0.00282843, max_iter 4 -> 2" in r.stdout
    assert (out / "metrics.json").is_file()


def test_time_budget_ends_the_run_not_max_iter(tmp_path, synth_data, monkeypatch):
    """A clock that moves 0.1 s per reading (whatever this machine's speed): the 2.4 s budget, not max_iter 2,
    ends the run, after the same number of iterations on any machine."""
    import time

    import blendseg.engine.fit as fit_module

    class FakeClock:
        now = 0.0

        def perf_counter(self) -> float:
            self.now += 0.1
            return self.now

    clock = FakeClock()
    monkeypatch.setattr(fit_module, "time", type("T", (), {"perf_counter": clock.perf_counter, "time": time.time}))
    counts = []
    for name in ("a", "b"):
        out = tmp_path / name
        args = ["train", "fcos_tiny_test", str(synth_data), "--out", str(out), "--no-eval"]
        assert main([*args, "solver.max_iter=2", "solver.max_minutes=0.04"]) == 0
        ck = load_checkpoint(out / "weights" / "last.pt")
        assert ck["iteration"] > 2 and ck["elapsed_s"] >= 0.04 * 60
        counts.append(ck["iteration"])
    assert counts[0] == counts[1]  # the fake clock, not the machine, decides


def test_blendmask_two_iterations_with_mask_ap(tmp_path, synth_data):
    out = tmp_path / "bm"
    args = ["train", "blendmask_tiny_test", str(synth_data), "--out", str(out), "solver.max_iter=2"]
    assert main([*args, "data.mask_format=polygon"]) == 0  # the reference's polygon mask targets
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"bbox", "segm", "best"} <= set(metrics) <= {"bbox", "segm", "best", "errors"}  # errors: with detections
    assert metrics["best"]["metric"] == "segm/AP"


@pytest.mark.slow
def test_yolact_trains_evaluates_and_converts(tmp_path, synth_data, capsys):
    out = tmp_path / "y"
    assert main(["train", "yolact_tiny_test", str(synth_data), "--out", str(out), "solver.max_iter=2",
                 "data.augment=ssd"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"bbox", "segm", "best"} <= set(metrics) <= {"bbox", "segm", "best", "errors"}  # best: chose best.pt
    assert main(["val", str(out / "weights" / "last.pt"), str(synth_data)]) == 0
    capsys.readouterr()
    images = synth_data.parent / "val" / "images"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    pred = tmp_path / "pred"
    assert main(["predict", str(out / "weights" / "last.pt"), str(images), str(broken), "--out", str(pred),
                 "--conf", "0", "--save-json"]) == 0  # fmt: skip
    records = json.loads((pred / "predictions.json").read_text())
    assert len(records) == len(list(images.iterdir())) and len(list(pred.glob("*_pred.png"))) == len(records)
    assert "broken.png: cannot read image" in capsys.readouterr().out
    inst = [i for r in records for i in r["instances"]]
    assert inst and {"box", "score", "class", "segmentation"} <= set(inst[0]) and inst[0]["class"] in (
        "circle", "rectangle", "triangle", "ellipse", "star", "ring")  # fmt: skip
    # an "official" checkpoint (official key names, official file name) converts by its name
    from safetensors.torch import save_file

    from blendseg.convert.yolact import map_key
    from blendseg.engine.checkpoint import load_checkpoint

    ours = load_checkpoint(out / "weights" / "last.pt")["model"]
    official = {_official_name(k): v for k, v in ours.items()}
    assert all(map_key(k) == ours_k for k, ours_k in zip(official, ours))
    weights = tmp_path / "yolact_tiny_test_3_100.safetensors"
    save_file(official, str(weights))
    capsys.readouterr()
    assert main(["convert", "--from", "yolact", "--weights", str(weights), "--out", str(tmp_path / "conv")]) == 0
    conv = load_checkpoint(tmp_path / "conv" / "model.pt")
    assert set(conv["model"]) == set(ours) and conv["config"]["model"]["arch"] == "yolact"
    # fine-tune from it, with the aspect-preserving pipeline instead of the squash
    capsys.readouterr()
    args = ["train", "yolact_tiny_test", str(synth_data), "--out", str(tmp_path / "ft"), "--weights",
            str(tmp_path / "conv" / "model.pt"), "solver.max_iter=1", "data.square_size=0"]  # fmt: skip
    assert main(args) == 0
    log = capsys.readouterr().out
    assert f"initialised {len(ours)} of the model's {len(ours)} tensors" in log and "every tensor loaded" in log
    assert {"bbox", "segm", "best"} <= set(json.loads((tmp_path / "ft" / "metrics.json").read_text()))
    # or straight from the official file, recognised by its keys (no convert step)
    args = ["train", "yolact_tiny_test", str(synth_data), "--out", str(tmp_path / "ft2"), "--weights", str(weights),
            "solver.max_iter=1", "--no-eval"]  # fmt: skip
    assert main(args) == 0
    log = capsys.readouterr().out
    assert f"initialised {len(ours)} of the model's {len(ours)} tensors" in log
    assert "(a dbolya/yolact model, mapped to blendseg's names)" in log


def test_fine_tuning_skips_the_class_count_layers():
    import dataclasses

    from blendseg.engine.runner import load_matching
    from blendseg.zoo import build_model, get_preset

    cfg = get_preset("yolact_tiny_test").model
    six = build_model(cfg)
    three = build_model(dataclasses.replace(cfg, yolact=dataclasses.replace(cfg.yolact, num_classes=3)))
    loaded, skipped = load_matching(three, six.state_dict())
    assert set(skipped) == {
        "prediction_layers.0.conf_layer.weight", "prediction_layers.0.conf_layer.bias",
        "semantic_seg_conv.weight", "semantic_seg_conv.bias",
    }  # fmt: skip
    assert torch.equal(three.proto_net[0].weight, six.proto_net[0].weight)


def _official_name(key: str) -> str:
    """Our key -> dbolya/yolact's (the inverse of blendseg.convert.yolact.map_key), to fake an official file."""
    import re

    key = key.replace("backbone.stem.conv1.norm.", "backbone.bn1.").replace("backbone.stem.conv1.", "backbone.conv1.")
    m = re.match(r"^backbone\.res(\d)\.(\d+)\.(.*)$", key)
    if m:
        rest = m.group(3).replace("conv2_offset.", "conv2.conv_offset_mask.")
        rest = re.sub(r"^conv(\d)\.norm\.", r"bn\1.", rest)
        rest = rest.replace("shortcut.norm.", "downsample.1.").replace("shortcut.", "downsample.0.")
        return f"backbone.layers.{int(m.group(1)) - 2}.{m.group(2)}.{rest}"
    m = re.match(r"^fpn\.(fpn_lateral|fpn_output)(\d)\.(.*)$", key)
    if m:
        kind = "lat_layers" if m.group(1) == "fpn_lateral" else "pred_layers"
        return f"fpn.{kind}.{5 - int(m.group(2))}.{m.group(3)}"
    m = re.match(r"^fpn\.top_block\.p(\d)\.(.*)$", key)
    return f"fpn.downsample_layers.{int(m.group(1)) - 6}.{m.group(2)}" if m else key


def test_meinst_fits_its_encoding_trains_and_loads_a_fitted_file(tmp_path, synth_data, capsys):
    out = tmp_path / "m"
    assert main(["train", "meinst_tiny_test", str(synth_data), "--out", str(out), "solver.max_iter=2"]) == 0
    log = capsys.readouterr().out
    assert "MEInst: fitted a 12-d PCA on" in log and "reconstruction mIoU" in log
    assert {"bbox", "segm", "best"} <= set(json.loads((out / "metrics.json").read_text()))
    model, _, _ = load_model(out / "weights" / "last.pt")
    assert model.mask_encoding.fitted  # stored inside the checkpoint: no file needed at inference

    enc = tmp_path / "enc.pt"
    assert main(["fit-encoding", str(synth_data), "--dim", "12", "--out", str(enc)]) == 0
    assert "reconstruction mIoU" in capsys.readouterr().out
    out2 = tmp_path / "m2"
    args = ["train", "meinst_tiny_test", str(synth_data), "--out", str(out2), "solver.max_iter=1", "--no-eval"]
    assert main([*args, f"model.meinst.encoding_file={enc}"]) == 0
    assert "mask encoding loaded from" in capsys.readouterr().out
    m2, _, _ = load_model(out2 / "weights" / "last.pt")
    torch_equal = (m2.mask_encoding.components - model.mask_encoding.components).abs().max()
    assert float(torch_equal) < 1e-5  # the same fit (same seed, same masks)


def test_panoptic_synth_check_train_val_predict_and_score(tmp_path, capsys):
    data = tmp_path / "pan"
    assert main(["data", "synth", str(data), "--train", "8", "--val", "3", "--min-size", "96", "--max-size", "128",
                 "--seed", "2", "--panoptic"]) == 0  # fmt: skip
    assert main(["data", "check", str(data / "val" / "panoptic.json"), "--masks", str(data / "val" / "panoptic")]) == 0
    out = tmp_path / "run"
    args = ["train", "blendmask_panoptic_tiny_test", str(data / "data.yaml"), "--out", str(out), "solver.max_iter=2"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"bbox", "segm", "panoptic"} <= set(metrics)
    assert set(metrics["panoptic"]) >= {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"}
    assert set(metrics["panoptic"]["per_class"]) == {"circle", "rectangle", "triangle", "ellipse", "star", "ring",
                                                      "sky", "vegetation", "water", "ground"}  # fmt: skip
    ck = load_checkpoint(out / "weights" / "last.pt")
    assert (
        ck["stuff_names"] == ["sky", "vegetation", "water", "ground"] and ck["config"]["model"]["panoptic"]["enabled"]
    )
    ckpt, val = str(out / "weights" / "last.pt"), tmp_path / "val"
    assert main(["val", ckpt, str(data / "data.yaml"), "--out", str(val)]) == 0
    pq = json.loads((val / "metrics.json").read_text())["panoptic"]["PQ"]
    assert '"PQ"' in capsys.readouterr().out
    # the written predictions are valid COCO panoptic: eval-panoptic scores them as val did
    gt = [str(data / "val" / "panoptic.json"), str(data / "val" / "panoptic")]
    pred = [str(val / "panoptic_predictions.json"), str(val / "panoptic")]
    assert main(["eval-panoptic", *gt, *pred, "--out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["panoptic"]["PQ"] == pytest.approx(pq)
    pred_dir = tmp_path / "predict"
    assert main(["predict", ckpt, str(data / "val" / "images"), "--out", str(pred_dir), "--save-panoptic"]) == 0
    written = json.loads((pred_dir / "panoptic.json").read_text())
    assert len(written["annotations"]) == 3 and len(list((pred_dir / "panoptic").glob("*.png"))) == 3
    assert {c["name"] for c in written["categories"] if not c["isthing"]} == {"sky", "vegetation", "water", "ground"}
    assert len(list(pred_dir.glob("*_pred.png"))) == 3


def test_help_says_what_the_tool_does(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the description
    assert "BlendMask, YOLACT / YOLACT++ and MEInst" in out and "blendseg presets" in out
    assert "argparse" not in out and "``" not in out  # not a developer's docstring


def test_val_on_data_with_another_class_count_names_the_mismatch(checkpoint, tmp_path, capsys):
    """A 6-class model on 2-class data: one line naming both, not an IndexError deep in the evaluation."""
    from PIL import Image

    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100, "iscrowd": 0,
           "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]]}  # fmt: skip
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}], "annotations": [ann, ann | {"id": 2,
            "category_id": 2}], "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    (tmp_path / "d.yaml").write_text("val: {images: ., annotations: ann.json}\n")
    assert main(["val", str(checkpoint), str(tmp_path / "d.yaml")]) == 1
    assert "the model predicts 6 classes; " in capsys.readouterr().err
