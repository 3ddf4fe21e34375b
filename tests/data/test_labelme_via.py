"""``data convert --from labelme|via``: the two formats read as COCO (polygons, rectangles, circles, ellipses,
multi-part instances, class attributes), written in CVAT's layout that training reads as a folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from blendseg.cli import main
from blendseg.data.coco import open_split
from blendseg.data.labelme_via import read_labelme, read_via


def _image(path, w=80, h=60):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def _labelme(folder):
    _image(folder / "a.jpg")
    shapes = [
        {"label": "cat", "points": [[10, 10], [30, 10], [30, 30]], "shape_type": "polygon", "group_id": None},
        {"label": "box", "points": [[50, 40], [40, 20]], "shape_type": "rectangle", "group_id": None},
        {"label": "cat", "points": [[60, 40], [60, 45]], "shape_type": "circle", "group_id": 1},
        {"label": "cat", "points": [[70, 50], [75, 50], [75, 55]], "shape_type": "polygon", "group_id": 1},
        {"label": "edge", "points": [[0, 0], [5, 5]], "shape_type": "line", "group_id": None},
    ]
    doc = {"version": "5.4.1", "shapes": shapes, "imagePath": "a.jpg", "imageData": None, "imageHeight": 60,
           "imageWidth": 80}  # fmt: skip
    (folder / "a.json").write_text(json.dumps(doc))


def test_labelme_shapes_become_instances(tmp_path):
    _labelme(tmp_path)
    (tmp_path / "notes.json").write_text("[1, 2]")
    coco, root, probs = read_labelme(tmp_path)
    assert [c["name"] for c in coco["categories"]] == ["cat", "box"]
    anns = coco["annotations"]
    assert len(anns) == 3 and [len(a["segmentation"]) for a in anns] == [1, 1, 2]  # the group: two parts
    assert anns[1]["bbox"] == [40.0, 20.0, 10.0, 20.0]  # a rectangle from any two corners
    circle = anns[2]["segmentation"][0]
    assert max(circle[0::2]) == pytest.approx(65.0) and len(circle) == 64
    text = [str(p) for p in probs]
    assert any("1 'line' shape(s) mark no area" in t for t in text) and any("not a LabelMe file" in t for t in text)


def test_via_regions_and_class_attributes(tmp_path):
    _image(tmp_path / "b.png")
    regions = [
        {"shape_attributes": {"name": "polygon", "all_points_x": [1, 20, 10], "all_points_y": [1, 1, 20]},
         "region_attributes": {"species": "dog"}},
        {"shape_attributes": {"name": "rect", "x": 30, "y": 5, "width": 10, "height": 8},
         "region_attributes": {"species": "cat"}},
        {"shape_attributes": {"name": "ellipse", "cx": 50, "cy": 40, "rx": 8, "ry": 4, "theta": 0.3},
         "region_attributes": {"species": "dog"}},
        {"shape_attributes": {"name": "point", "cx": 5, "cy": 5}, "region_attributes": {}},
    ]  # fmt: skip
    (tmp_path / "via.json").write_text(json.dumps({"_via_img_metadata": {"b.png1234": {
        "filename": "b.png", "size": 1234, "regions": regions, "file_attributes": {}}}}))  # fmt: skip
    coco, root, probs = read_via(tmp_path / "via.json")
    assert [c["name"] for c in coco["categories"]] == ["dog", "cat"] and len(coco["annotations"]) == 3
    assert coco["images"][0]["width"] == 80 and coco["annotations"][1]["bbox"] == [30.0, 5.0, 10.0, 8.0]
    assert "1 'point' region(s) mark no area" in str(probs[0])
    balloon = {"x": {"filename": "b.png", "regions": {"0": regions[0] | {"region_attributes": {}}}}}  # VIA 1.x
    (tmp_path / "v1.json").write_text(json.dumps(balloon))
    coco, _, _ = read_via(tmp_path / "v1.json", default_class="balloon")
    assert [c["name"] for c in coco["categories"]] == ["balloon"]


def test_convert_writes_a_folder_that_trains_reads(tmp_path, capsys):
    _labelme(tmp_path / "lm")
    assert main(["data", "convert", str(tmp_path / "lm"), "--from", "labelme", "--to", "coco",
                 "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    assert "1 images, 3 instances of cat, box" in capsys.readouterr().out
    ds = open_split(tmp_path / "out", "train", with_masks=True)  # the CVAT layout; with one image, no val part
    _, target = ds[0]
    assert target["masks"].shape == (3, 60, 80) and target["labels"].tolist() == [0, 1, 0]
    assert main(["data", "convert", str(tmp_path / "lm"), "--from", "labelme", "--to", "yolo", "--out", "x"]) == 2
