"""COCO panoptic data read directly: PNG ids, the semantic target, derived instances, `data check` on panoptic
files, the synthetic panoptic generator and the targets through the transforms."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from blendseg.cli import main
from blendseg.data.panoptic import (
    IGNORE,
    CocoPanoptic,
    check_panoptic,
    id2rgb,
    load_panoptic_json,
    panoptic_to_instances,
    rgb2id,
    semantic_target,
)
from blendseg.data.sources import load_data
from blendseg.data.synth import STUFF, render_image, synthesize
from blendseg.data.transforms import build_transforms
from blendseg.errors import DataError
from blendseg.ops.rle import decode


@pytest.fixture(scope="module")
def pan_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("pan")
    return synthesize(out, train=12, val=4, seed=5, min_size=96, max_size=128, panoptic=True)


def test_png_ids_round_trip():
    ids = np.array([[0, 1, 255], [256, 65536 + 7, 256**3 - 1]], np.uint32)
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3) and tuple(rgb[1, 0]) == (0, 1, 0)
    np.testing.assert_array_equal(rgb2id(rgb), ids)


def test_semantic_target_things_stuff_crowd_and_void():
    ids = np.array([[0, 10, 20], [30, 40, 99]], np.uint32)  # 99: a PNG id without segment
    segments = [{"id": 10, "category_id": 1}, {"id": 20, "category_id": 5, "iscrowd": 1},
                {"id": 30, "category_id": 101}, {"id": 40, "category_id": 103}]  # fmt: skip
    sem = semantic_target(ids, segments, {1: 0, 5: 0, 101: 1, 102: 2, 103: 3})
    np.testing.assert_array_equal(sem, [[IGNORE, 0, 0], [1, 3, IGNORE]])
    assert sem.dtype == np.uint8


def test_synthetic_panoptic_split_is_valid_and_deterministic(pan_data):
    root = pan_data.parent
    pan = load_panoptic_json(root / "train" / "panoptic.json")
    assert check_panoptic(pan, "train", root / "train" / "panoptic") == []
    assert [c["name"] for c in pan["categories"] if not c["isthing"]] == list(STUFF)
    a = render_image(5, "train", 2, 96, 128, "normal", panoptic=True)
    b = render_image(5, "train", 2, 96, 128, "normal", panoptic=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[2], b[2])
    assert json.dumps(a[3]) == json.dumps(b[3])
    stuff_seen = {
        s["category_id"] for ann in pan["annotations"] for s in ann["segments_info"] if s["category_id"] > 100
    }
    assert len(stuff_seen) >= 3
    # an RLE instance of the instances JSON is exactly one thing segment of the PNG (polygons, rasterised by the COCO
    # API, may differ from the painted pixels at their edges, as in COCO itself)
    coco = json.loads((root / "train" / "annotations.json").read_text())
    ann = next(a for a in coco["annotations"] if isinstance(a["segmentation"], dict))
    im = next(i for i in coco["images"] if i["id"] == ann["image_id"])
    ids = rgb2id(np.asarray(Image.open(root / "train" / "panoptic" / im["file_name"].replace(".jpg", ".png"))))
    mask = decode(ann["segmentation"], im["height"], im["width"]).astype(bool)
    assert len(np.unique(ids[mask])) == 1 and int((ids == ids[mask][0]).sum()) == int(mask.sum())


def test_derived_instances_equal_the_instances_json(pan_data):
    root = pan_data.parent
    pan = load_panoptic_json(root / "val" / "panoptic.json")
    derived = panoptic_to_instances(pan, root / "val" / "panoptic")
    coco = json.loads((root / "val" / "annotations.json").read_text())
    assert [c["id"] for c in derived["categories"]] == [c["id"] for c in coco["categories"]]
    ours = sorted((a["image_id"], a["category_id"], a["area"], a["iscrowd"]) for a in derived["annotations"])
    theirs = sorted((a["image_id"], a["category_id"], a["area"], a["iscrowd"]) for a in coco["annotations"])
    assert ours == theirs


@pytest.mark.parametrize("with_instances_json", [True, False])
def test_dataset_targets_follow_resize_and_flip(pan_data, with_instances_json):
    spec = load_data(pan_data).splits["train"]
    tf = build_transforms(True, (64,), "choice", 200, 64, 200, hflip=True)
    ann = spec.annotations if with_instances_json else None
    ds = CocoPanoptic(spec.panoptic, spec.panoptic_masks, spec.images, ann, with_panoptic_sem=True,
                      filter_empty=True, with_masks=True, transforms=tf)  # fmt: skip
    assert ds.stuff_names == list(STUFF) and ds.stuff_cat_ids == [101, 102, 103, 104]
    torch.manual_seed(0)
    for i in range(4):
        img, t = ds[i]
        sem = t["panoptic_sem"]
        assert type(sem) is torch.Tensor and sem.dtype == torch.uint8 and sem.shape == img.shape[-2:]
        assert set(sem.unique().tolist()) <= {0, 1, 2, 3, 4, IGNORE}
        # instance pixels are "things" (0) in the semantic target, wherever resize and flip moved them
        inside = t["masks"].bool().any(0)
        assert (sem[inside] == 0).float().mean() > 0.95


def test_check_reports_panoptic_problems(pan_data, tmp_path):
    root = tmp_path / "val"
    shutil.copytree(pan_data.parent / "val", root)
    pan = json.loads((root / "panoptic.json").read_text())
    first = pan["annotations"][0]
    png = root / "panoptic" / first["file_name"]
    ids = rgb2id(np.asarray(Image.open(png)))
    ids[0, 0] = 4242  # an id the JSON does not list
    Image.fromarray(id2rgb(ids[:, :-1])).save(png)  # and one column short
    first["segments_info"].append({"id": 77, "category_id": 101, "iscrowd": 0})  # listed, not in the PNG
    first["segments_info"][0]["category_id"] = 555
    (root / "panoptic.json").write_text(json.dumps(pan))
    text = "\n".join(str(p) for p in check_panoptic(pan, "x", root / "panoptic"))
    for message in ("[4242] in the PNG are not in segments_info", "[77] of segments_info are empty",
                    "unknown category_id 555", "the image is"):  # fmt: skip
        assert message in text
    assert main(["data", "check", str(root / "panoptic.json")]) == 1  # PNG folder found by COCO's naming


def test_thing_categories_must_agree(pan_data, tmp_path):
    spec = load_data(pan_data).splits["val"]
    coco = json.loads(spec.annotations.read_text())
    coco["categories"] = coco["categories"][:-1]
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != 6]
    (tmp_path / "inst.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="thing categories"):
        CocoPanoptic(spec.panoptic, spec.panoptic_masks, spec.images, tmp_path / "inst.json")


def test_panoptic_only_split_feeds_instance_and_panoptic_models(pan_data, tmp_path):
    from blendseg.engine.runner import build_dataset
    from blendseg.zoo import get_preset

    root = pan_data.parent
    split = "{images: train/images, panoptic: train/panoptic.json, panoptic_masks: train/panoptic}"
    (tmp_path / "d.yaml").write_text(f"path: {root}\ntrain: {split}\n")
    plain = build_dataset(get_preset("blendmask_tiny_test"), str(tmp_path / "d.yaml"), "train", train=True)
    _, t = plain[0]
    assert "masks" in t and "panoptic_sem" not in t and plain.class_names[0] == "circle"
    pan = build_dataset(get_preset("blendmask_panoptic_tiny_test"), str(tmp_path / "d.yaml"), "train", train=True)
    assert "panoptic_sem" in pan[0][1]
    (tmp_path / "e.yaml").write_text(f"path: {root}\ntrain: {{images: train/images, panoptic: train/panoptic.json}}\n")
    with pytest.raises(DataError, match="panoptic_masks"):
        build_dataset(get_preset("blendmask_panoptic_tiny_test"), str(tmp_path / "e.yaml"), "train", train=True)
