"""Ultralytics' YOLO segmentation layout: label files written by hand (good and every kind of bad line), the COCO
dict they read as, training and `data check` on a YOLO data.yaml, and the round trip COCO -> YOLO -> COCO."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from blendseg.data.coco import open_instances
from blendseg.data.convert import convert_dataset
from blendseg.data.sources import load_data
from blendseg.data.yolo import mask_outline, merge_rings, yolo_to_coco
from blendseg.errors import DataError
from blendseg.ops.rle import decode


def _dataset(root, labels: dict[str, str], extra_labels: dict[str, str] | None = None, size=(40, 20)):
    """images/train/<name>.png (w x h = size) and labels/train/<name>.txt per entry (None: no label file)."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for name, text in labels.items():
        Image.new("RGB", size).save(root / "images" / "train" / f"{name}.png")
        if text is not None:
            (root / "labels" / "train" / f"{name}.txt").write_text(text)
    for name, text in (extra_labels or {}).items():
        (root / "labels" / "train" / f"{name}.txt").write_text(text)
    (root / "data.yaml").write_text(yaml.safe_dump({"path": ".", "train": "images/train", "val": "images/train",
                                                    "names": {0: "cat", 1: "dog"}}))  # fmt: skip
    return root / "data.yaml"


def test_polygons_and_boxes_read_in_pixels(tmp_path):
    data_yaml = _dataset(tmp_path, {"a": "1 0.25 0.5 0.75 0.5 0.5 1.0\n0 0.5 0.5 0.5 1.0\n", "b": None})
    spec = load_data(data_yaml)
    coco, probs = yolo_to_coco(spec.splits["train"].images, spec.names, spec.root)
    assert [str(p) for p in probs] == [f"WARNING {tmp_path / 'images' / 'train'}: 1 image(s) without a label file: "
                                       "background"]  # fmt: skip
    assert [im["file_name"] for im in coco["images"]] == ["images/train/a.png", "images/train/b.png"]
    assert coco["images"][0]["width"] == 40 and coco["images"][0]["height"] == 20
    tri, box = coco["annotations"]
    assert tri["category_id"] == 2 and tri["segmentation"] == [[10.0, 10.0, 30.0, 10.0, 20.0, 20.0]]
    # area: COCO's, the rasterised polygon's pixels (pycocotools), not the shoelace formula's 100
    from pycocotools import mask as coco_mask

    coco_area = float(coco_mask.area(coco_mask.merge(coco_mask.frPyObjects(tri["segmentation"], 20, 40))))
    assert tri["bbox"] == [10.0, 10.0, 20.0, 10.0] and tri["area"] == coco_area == 90.0
    assert box["category_id"] == 1 and box["bbox"] == [10.0, 0.0, 20.0, 20.0]
    with pytest.warns(UserWarning, match="without a label file: background"):
        ds = open_instances(spec, "train", with_masks=True)
    assert ds.class_names == ["cat", "dog"] and len(ds) == 2
    image, target = ds[0]
    assert image.shape == (3, 20, 40) and target["labels"].tolist() == [1, 0]
    assert target["masks"][1].sum() == 20 * 20  # the box as a mask


BAD = {
    "odd": ("0 0.1 0.2 0.3 0.4 0.5\n", "line 1: odd number of coordinates (5)"),
    "outside": ("0 0.1 0.2 1.3 0.4 0.5 0.6\n", "line 1: coordinates outside [0, 1] (from 0.1 to 1.3): not normalised"),
    "class": ("0 0.1 0.1 0.2 0.2 0.3 0.1\n5 0.1 0.1 0.2 0.2 0.3 0.1\n", "line 2: class index 5 is not in names (0..1)"),
    "short": ("1 0.1 0.2\n", "line 1: 2 coordinates: a box needs 4 (cx cy w h), a polygon at least 6 (3 points)"),
    "words": ("cat 0.1 0.2 0.3 0.4\n", "line 1: not numbers: 'cat 0.1 0.2 0.3 0.4'"),
}


def test_every_bad_line_is_named_with_file_and_line(tmp_path):
    data_yaml = _dataset(tmp_path, {k: v[0] for k, v in BAD.items()}, extra_labels={"ghost": "0 0.5 0.5 0.2 0.2\n"})
    spec = load_data(data_yaml)
    _, probs = yolo_to_coco(spec.splits["train"].images, spec.names, spec.root)
    errors = {str(p) for p in probs if p.severity == "error"}
    for name, (_, message) in BAD.items():
        assert f"ERROR {tmp_path / 'labels' / 'train' / name}.txt: {message}" in errors
    assert len(errors) == len(BAD)
    warning = [str(p) for p in probs if p.severity == "warning"]
    assert warning == [f"WARNING {tmp_path / 'images' / 'train'}: 1 label file(s) without an image: "
                       f"{(tmp_path / 'labels' / 'train' / 'ghost.txt').resolve()}"]  # fmt: skip
    with pytest.raises(DataError, match="odd number of coordinates"):
        open_instances(spec, "train")


def test_data_check_on_a_yolo_data_yaml(tmp_path, capsys):
    from blendseg.cli import main

    data_yaml = _dataset(tmp_path, {"good": "0 0.1 0.1 0.5 0.1 0.3 0.9\n", "bad": BAD["odd"][0]})
    assert main(["data", "check", str(data_yaml)]) == 1
    out = capsys.readouterr().out
    assert out.count("bad.txt: line 1: odd number of coordinates (5)") == 1  # train and val share it: said once
    assert out.splitlines()[-1].endswith("1 error(s), 0 warning(s)")


def test_a_yolo_data_yaml_needs_names(tmp_path):
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\n")
    with pytest.raises(DataError, match="YOLO-format splits need names"):
        load_data(tmp_path / "data.yaml")


def test_outlines_and_merged_rings():
    mask = np.zeros((6, 8), np.uint8)
    mask[1:4, 1:3] = 1  # a 2 x 3 block
    mask[2:5, 5:7] = 1  # another region, with a notch: still one outline
    mask[3, 6] = 0
    outlines = mask_outline(mask)
    assert len(outlines) == 2
    assert {(1.0, 1.0), (3.0, 1.0), (3.0, 4.0), (1.0, 4.0)} in [set(zip(o[0::2], o[1::2])) for o in outlines]
    back = decode([merge_rings(outlines)], 6, 8).astype(bool)  # one polygon for both regions
    m = mask.astype(bool)
    assert (back & m).sum() / (back | m).sum() >= 0.8


def test_coco_to_yolo_to_coco_keeps_every_instance(tmp_path):
    """The synthetic split (polygons and RLE masks, a crowd region): every non-crowd instance comes back with its
    class; polygons with IoU >= 0.9 (6-decimal normalised coordinates), RLE masks traced along their pixel edges
    (IoU >= 0.9 too; a ring's hole is filled, YOLO polygons have none, so there every ring pixel stays covered)."""
    from blendseg.data.synth import synthesize

    src = synthesize(tmp_path / "coco", train=6, val=2, seed=1, min_size=96, max_size=128)
    yolo_yaml, _ = convert_dataset(src, "yolo", tmp_path / "yolo")
    back_yaml, _ = convert_dataset(yolo_yaml, "coco", tmp_path / "back")
    spec, back_spec = load_data(src), load_data(back_yaml)
    a = json.loads(spec.splits["train"].annotations.read_text())
    b = json.loads(back_spec.splits["train"].annotations.read_text())
    names_a = {c["id"]: c["name"] for c in a["categories"]}
    names_b = {c["id"]: c["name"] for c in b["categories"]}
    by_file = {im["file_name"].split("/")[-1]: im for im in b["images"]}
    for im in a["images"]:
        mine = [x for x in a["annotations"] if x["image_id"] == im["id"] and not x.get("iscrowd", 0)]
        other = by_file[im["file_name"].split("/")[-1]]
        theirs = [x for x in b["annotations"] if x["image_id"] == other["id"]]
        assert len(mine) == len(theirs)
        h, w = im["height"], im["width"]
        for x, y in zip(mine, theirs):
            assert names_a[x["category_id"]] == names_b[y["category_id"]]
            m1, m2 = decode(x["segmentation"], h, w).astype(bool), decode(y["segmentation"], h, w).astype(bool)
            if names_a[x["category_id"]] == "ring":  # its hole is filled: every ring pixel is still covered
                assert (m1 & m2).sum() / m1.sum() >= 0.9
                continue
            iou = (m1 & m2).sum() / max((m1 | m2).sum(), 1)
            assert iou >= 0.9, (names_a[x["category_id"]], iou)


def test_training_runs_on_yolo_labels(tmp_path):
    from blendseg.cli import main
    from blendseg.data.synth import synthesize

    src = synthesize(tmp_path / "coco", train=6, val=2, seed=1, min_size=96, max_size=128)
    yolo_yaml, _ = convert_dataset(src, "yolo", tmp_path / "yolo")
    code = main(["train", "blendmask_tiny_test", str(yolo_yaml), "--out", str(tmp_path / "run"),
                 "data.num_workers=0", "solver.max_iter=2", "solver.ims_per_batch=2"])  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "segm" in metrics


def test_fuzzed_label_files_give_messages_or_fixes_never_a_traceback(tmp_path):
    """300 seeded damaged copies of a valid label file (a token replaced, deleted or doubled, a line cut, bytes
    that are not text, a value past [0, 1]): each is read (fixes warned) or refused with messages naming the file;
    what is read loads its target."""
    import random

    from blendseg.data.sources import read_split

    good = "0 0.1 0.1 0.5 0.1 0.3 0.9\n1 0.5 0.5 0.2 0.2\n1 0.6 0.6 0.9 0.6 0.9 0.9 0.6 0.9\n"
    data_yaml = _dataset(tmp_path, {"a": good})
    label = tmp_path / "labels" / "train" / "a.txt"
    spec = load_data(data_yaml)
    rng, refused = random.Random(0), 0
    tokens = ["-1", "2", "nan", "inf", "1e9", "0.5", "x", "", "1.0000001", "-0.0000001", "0,5", "3", "0.5 0.5"]
    for k in range(300):
        lines = [ln.split() for ln in good.splitlines()]
        for _ in range(rng.randint(1, 3)):
            line = rng.choice(lines)
            op = rng.randrange(4)
            if op == 0 and line:
                line[rng.randrange(len(line))] = rng.choice(tokens)
            elif op == 1 and line:
                del line[rng.randrange(len(line))]
            elif op == 2 and line:
                line.insert(rng.randrange(len(line)), rng.choice(tokens))
            else:
                del line[rng.randrange(len(line) + 1) :]
        text = "\n".join(" ".join(t for t in ln if t) for ln in lines) + "\n"
        label.write_bytes(text.encode() if rng.random() > 0.05 else b"\xff\xfe\x00" + text.encode())
        try:
            data, _, probs = read_split(spec, "train")
        except Exception as e:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"mutation {k}: {type(e).__name__}: {e}\n{text}") from e
        if any(p.severity == "error" for p in probs):
            assert all(str(label) in str(p) or "YOLO labels" in str(p) for p in probs if p.severity == "error")
            refused += 1
            continue
        ds = open_instances(spec, "train", with_masks=True)
        assert all(ds[i][1]["masks"].shape[0] == len(ds[i][1]["boxes"]) for i in range(len(ds)))
    assert 0 < refused < 300
