"""Curves read from COCOeval's arrays, the evaluation report of `val --out`, and `blendseg compare`."""

import json

import numpy as np
import pytest

from blendseg.evaluation.curves import f1_confidence, pr_curves
from blendseg.evaluation.report import format_report


def _cocoeval(gt, dt):
    from faster_coco_eval import COCO, COCOeval_faster

    g = COCO(gt)
    ev = COCOeval_faster(g, g.loadRes(dt), "bbox")
    ev.evaluate()
    ev.accumulate()
    return ev


def _case():
    """One class, two boxes; detections: 0.9 on the first, 0.6 nowhere, 0.3 on the second."""
    gt = {"images": [{"id": 1, "height": 100, "width": 100}], "categories": [{"id": 7, "name": "a"}, {"id": 8}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10], "area": 100,
                           "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 50, 10, 10], "area": 100,
                           "iscrowd": 0}]}  # fmt: skip
    dt = [{"image_id": 1, "category_id": 7, "bbox": b, "score": s}
          for b, s in (([0, 0, 10, 10], 0.9), ([80, 80, 10, 10], 0.6), ([50, 50, 10, 10], 0.3))]  # fmt: skip
    return gt, dt


def test_pr_curve_points_are_cocoevals_precision_array():
    ev = _cocoeval(*_case())
    p = np.asarray(ev.eval["precision"])
    pr = pr_curves(p, np.asarray(ev.params.recThrs), ["a", "b"])
    assert pr["AP50"]["a"] == p[0, :, 0, 0, -1].tolist()
    assert pr["AP"]["a"] == pytest.approx(p[:, :, 0, 0, -1].mean(axis=0).tolist())
    assert pr["AP50"]["b"] is None  # class 8 has no instances
    assert pr["AP50"]["all"] == pr["AP50"]["a"]  # the mean over classes with instances
    # envelope: precision 1 up to recall 0.5, 2/3 beyond
    assert pr["AP50"]["a"][50] == 1.0 and pr["AP50"]["a"][51] == pytest.approx(2 / 3)


def test_f1_optimum_on_a_hand_built_case():
    """Above 0.3 only the first box is found (recall 1/2, precision 1): F1 2/3; at 0.3 both (precision 2/3 after
    the false positive at 0.6): F1 0.8, the best; the highest threshold that gives it is 0.3."""
    ev = _cocoeval(*_case())
    f1 = f1_confidence(np.asarray(ev.eval["precision"]), np.asarray(ev.eval["scores"]),
                       np.asarray(ev.params.recThrs), ["a", "b"])  # fmt: skip
    assert f1["best_conf"] == 0.3 and f1["best_f1"] == pytest.approx(0.8)
    curve = dict(zip(f1["conf"], f1["a"]))
    assert curve[0.5] == pytest.approx(2 / 3) and curve[0.1] == pytest.approx(0.8) and curve[0.95] == 0.0
    assert f1["b"] is None


def test_classes_without_instances_say_so():
    metrics = {"bbox": {"AP-a": 12.5, "AP-b": None, "F1": 0.5, "F1_conf": 0.4}}
    text = format_report(metrics, ["a", "b"])
    assert "no instances" in text and "nan" not in text.lower() and "suggested --conf 0.40" in text


def test_val_out_writes_results_json_that_rescores_to_the_same_ap(checkpoint, synth_data, tmp_path, figures):
    from blendseg.engine.runner import validate

    out = tmp_path / "val"
    metrics = validate(str(checkpoint), str(synth_data), out_dir=out, device="cpu", save_worst=2)
    for name in ("BoxPR_curve.png", "BoxF1_curve.png", "MaskPR_curve.png", "MaskF1_curve.png",
                 "confusion_matrix_box.png", "confusion_matrix_mask.png", "metrics.json"):  # fmt: skip
        assert (out / name).stat().st_size > 0, name
    assert len(list((out / "worst").glob("*.png"))) == 2
    assert set(metrics["errors"]) == {"bbox", "segm"}
    assert set(metrics["errors"]["segm"]["dAP"]) == {"Cls", "Loc", "Both", "Dupe", "Bkg", "Miss"}
    results = json.loads((out / "coco_instances_results.json").read_text())
    assert results and {"image_id", "category_id", "bbox", "score", "segmentation"} <= set(results[0])
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO(str(synth_data.parent / "val" / "annotations.json"))
    ev = COCOeval_faster(gt, gt.loadRes(results), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] * 100 == pytest.approx(metrics["segm"]["AP"], abs=1e-6)


def _fake_run(folder, classes, aps):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("seed: 0\n")
    log = [{"iteration": i, "time_s": i * 0.5, "lr": 0.01, "loss": 3.0 - i / 50} for i in (1, 20, 40, 60)]
    (folder / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    rows = "iteration,epoch,time_s,lr,box_AP,mask_AP\n" + "".join(f"{30 * (k + 1)},0,{15 * (k + 1)},0.01,{a},{a - 1}\n"
                                                                   for k, a in enumerate(aps))  # fmt: skip
    (folder / "results.csv").write_text(rows)
    metrics = {"bbox": {"AP": aps[-1], **{f"AP-{c}": 1.0 for c in classes}}, "segm": {"AP": aps[-1] - 1},
               "best": {"metric": "segm/AP", "value": aps[-1] - 1, "iteration": 60}}  # fmt: skip
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_compare_two_runs_and_bad_folders(tmp_path, capsys):
    from blendseg.cli import main

    a = _fake_run(tmp_path / "a", ["x", "y"], [10.0, 20.0])
    b = _fake_run(tmp_path / "b", ["x", "y"], [12.0, 25.5])
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr()
    assert "| b | 60 | 0.5 | 25.5 |" in out.out and "warning" not in out.err
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0
    assert (tmp_path / "cmp" / "compare.md").read_text().startswith("| run |")
    c = _fake_run(tmp_path / "c", ["z"], [5.0])
    assert main(["compare", str(a), str(c), "--out", str(tmp_path / "cmp")]) == 0
    assert "different classes" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(a), str(tmp_path / "empty")]) == 1
    assert f"{tmp_path / 'empty'}: not a run folder" in capsys.readouterr().err
    noeval = _fake_run(tmp_path / "noeval", ["x"], [1.0])
    (noeval / "results.csv").unlink()
    (noeval / "metrics.json").unlink()
    assert main(["compare", str(a), str(noeval)]) == 1
    assert "has no evaluation" in capsys.readouterr().err
