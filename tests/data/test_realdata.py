"""Real exports from annotation tools (../shared/realdata, untouched: README and PROVENANCE.txt there), given as
their folders: `data check` names the fixes with their counts, strict mode refuses them, and short runs train and
evaluate on each (the folder's own layout; a val split made where there is none)."""

from __future__ import annotations

import json

import pytest

from blendseg.cli import main

from ..conftest import REALDATA, reference_dir

# folder -> (fixes `data check` must report, and nothing else but warnings)
FIXES = {
    "car_interior_cvat_tiny": ["29 bbox(es) missing or unlike their masks", "28 area(s) missing or unlike",
                               "13 categor(ies) without any annotation dropped"],
    "fire_smoke_cvat_boxes": ["21 image file(s) missing", "2 categor(ies) without any annotation dropped",
                              "1879 of 1879 annotation(s) are box-only"],
    "dental_root_cvat": [],
    "shoe_soles_yolo": [],
}  # fmt: skip


def _check(folder, capsys, *flags) -> tuple[int, str]:
    code = main(["data", "check", str(folder), *flags])
    return code, capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(FIXES))
def test_data_check_reads_each_export_as_it_is(name, capsys):
    folder = reference_dir(name, REALDATA)
    code, out = _check(folder, capsys)
    assert code == 0, out
    warnings = [line for line in out.splitlines() if line.startswith("WARNING")]
    for fix in FIXES[name]:
        assert sum(fix in w for w in warnings) == 1, (fix, warnings)  # once, though two splits share the file
    assert len(warnings) == len(FIXES[name]), warnings
    if name != "shoe_soles_yolo":  # no split of their own: one made, and said so
        assert "no val split" in out and "train (train part)" in out and "val (val part)" in out
    else:  # Roboflow's data.yaml: "train: ../train/images" beside it, read as ultralytics does
        assert "train: yolo labels of" in out and "  390 images, 410 instances" in out
        assert "  15 images, 37 instances, 1 classes" in out


def test_strict_refuses_every_fix(capsys):
    for name in ("car_interior_cvat_tiny", "fire_smoke_cvat_boxes"):
        code, out = _check(reference_dir(name, REALDATA), capsys, "--strict")
        errors = [line for line in out.splitlines() if line.startswith("ERROR")]
        assert code == 1 and errors and all("data.strict" in e for e in errors), out
    code, out = _check(reference_dir("dental_root_cvat", REALDATA), capsys, "--strict")
    assert code == 0, out  # nothing to fix


def _run(preset: str, folder, out, capsys, *overrides) -> dict:
    args = ["train", preset, str(folder), "--out", str(out), "solver.max_iter=2", "solver.ims_per_batch=2",
            "data.num_workers=0", "data.min_size_train=[128]", "data.max_size_train=160", "data.min_size_test=128",
            "data.max_size_test=160", *overrides]  # fmt: skip
    code = main(args)
    text = capsys.readouterr()
    assert code == 0, text.err[-2000:]
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_short_runs_train_and_evaluate_on_each_export(tmp_path, capsys):
    """dental (CVAT, its own val split made), shoe soles (Roboflow YOLOv8 layout), car interior (its boxes from
    its polygons) with BlendMask; fire / smoke (box-only, 5-22 MP photos beside thumbnails) with FCOS, and a mask
    method refusing it in one line."""
    for name in ("dental_root_cvat", "shoe_soles_yolo", "car_interior_cvat_tiny"):
        metrics = _run("blendmask_tiny_test", reference_dir(name, REALDATA), tmp_path / name, capsys)
        assert {"bbox", "segm"} <= set(metrics), name
    fire = reference_dir("fire_smoke_cvat_boxes", REALDATA)
    assert "bbox" in _run("fcos_tiny_test", fire, tmp_path / "fire", capsys)
    assert main(["train", "blendmask_tiny_test", str(fire), "--out", str(tmp_path / "no")]) == 1
    err = capsys.readouterr().err
    assert "1736 of 1736 annotation(s) have no mask (box-only)" in err and "fcos_*" in err, err
