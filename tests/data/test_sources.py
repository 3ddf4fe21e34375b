"""Where the data is: a data.yaml, or an export folder as a tool wrote it (Roboflow COCO, CVAT COCO, ultralytics),
with a val split made reproducibly where there is none, and categories that no split annotates dropped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from blendseg.cli import main
from blendseg.data.sources import group_key, holdout, load_data, read_split
from blendseg.errors import DataError


def _coco(names: list[str], cats: list[tuple[int, str]], per_image: int = 1) -> dict:
    images = [{"id": i + 1, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(names)]
    anns = [{"id": k + 1, "image_id": im["id"], "category_id": cats[-1][0], "bbox": [2, 2, 10, 10], "area": 100,
             "segmentation": [[2, 2, 12, 2, 12, 12, 2, 12]], "iscrowd": 0}
            for k, im in enumerate(images * per_image)]  # fmt: skip
    return {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for i, n in cats]}


def _images(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(folder / n)


def test_roboflow_coco_folder_and_its_dataset_category(tmp_path):
    """Roboflow's COCO export: train/ valid/ test/ each with _annotations.coco.json, and a category 0 named after
    the dataset that nothing is annotated with (dropped, said once per split)."""
    cats = [(0, "shoes-dataset"), (1, "shoe")]
    for split, names in (("train", ["a.jpg", "b.jpg"]), ("valid", ["c.jpg"])):
        _images(tmp_path / split, names)
        (tmp_path / split / "_annotations.coco.json").write_text(json.dumps(_coco(names, cats)))
    spec = load_data(tmp_path)
    assert set(spec.splits) == {"train", "val"} and "Roboflow COCO" in spec.notes[0]
    data, _, probs = read_split(spec, "val")
    assert [c["name"] for c in data["categories"]] == ["shoe"]
    assert any("1 categor(ies) without any annotation dropped, e.g. 0: 'shoes-dataset'" in str(p) for p in probs)


def test_a_category_annotated_in_any_split_is_kept_in_every_split(tmp_path):
    _images(tmp_path / "images", ["a.jpg", "b.jpg"])
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_train.json").write_text(json.dumps(_coco(["a.jpg"], [(1, "x"), (2, "y")])))
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(_coco(["b.jpg"], [(1, "x"), (2, "y")])))
    spec = load_data(tmp_path)  # CVAT with two subsets; both annotate y only
    assert set(spec.splits) == {"train", "val"}
    assert [c["name"] for c in read_split(spec, "train")[0]["categories"]] == ["y"]  # x: nowhere annotated
    (tmp_path / "annotations" / "instances_val.json").write_text(json.dumps(_coco(["b.jpg"], [(2, "y"), (1, "x")])))
    assert [c["name"] for c in read_split(load_data(tmp_path), "train")[0]["categories"]] == ["x", "y"]  # x in val


def test_ultralytics_data_yaml_with_roboflow_parent_paths(tmp_path):
    """Roboflow's YOLOv8 export: data.yaml beside train/ valid/, no path:, and train: ../train/images."""
    for split in ("train", "valid"):
        _images(tmp_path / split / "images", ["a.jpg"])
        (tmp_path / split / "labels").mkdir()
        (tmp_path / split / "labels" / "a.txt").write_text("0 0.1 0.1 0.5 0.1 0.3 0.9\n")
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 1\nnames: ['shoe']\n")
    for given in (tmp_path / "data.yaml", tmp_path):  # the yaml or its folder
        spec = load_data(given)
        assert spec.splits["train"].images == tmp_path / "train" / "images" and spec.splits["val"].format == "yolo"
        assert len(read_split(spec, "val")[0]["annotations"]) == 1


def test_a_folder_without_a_known_layout_is_a_message_naming_them(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DataError, match="Roboflow COCO: train/_annotations.coco.json; CVAT COCO"):
        load_data(tmp_path)
    assert main(["data", "check", str(tmp_path)]) == 1 and "not an export layout" in capsys.readouterr().err
    assert main(["train", "fcos_tiny_test", str(tmp_path / "missing")]) == 1
    assert "no such data.yaml or dataset folder" in capsys.readouterr().err


def test_the_val_split_made_keeps_copies_of_one_source_image_together_and_repeats(tmp_path):
    names = [f"img{k}_png.rf.{h:032x}.jpg" for k in range(20) for h in (k, k + 100, k + 200)]  # 3 copies each
    assert group_key(names[0]) == group_key(names[1]) == "img0_png"
    data = _coco(names, [(1, "x")])
    val, train = holdout(data, "val"), holdout(data, "train")
    assert len(val["images"]) == 6 and len(train["images"]) == 54  # 2 of 20 groups, whole
    assert {group_key(i["file_name"]) for i in val["images"]}.isdisjoint(group_key(i["file_name"]) for i in
                                                                          train["images"])  # fmt: skip
    assert holdout(data, "val") == val and len(val["annotations"]) == 6
    _images(tmp_path / "images", names)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_default.json").write_text(json.dumps(data))
    spec = load_data(tmp_path)  # one JSON (CVAT "default"): train and a val part
    assert spec.splits["val"].part == "val" and "no val split" in spec.notes[-1]
    assert len(read_split(spec, "val")[0]["images"]) == 6
