"""COCO loading and `data check` on well-formed and malformed annotations."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from blendseg.data.check import check_file
from blendseg.data.coco import CocoInstances
from blendseg.data.sources import load_data
from blendseg.data.transforms import build_transforms, shortest_edge_size
from blendseg.errors import DataError
from blendseg.ops.rle import encode


def _write(tmp_path, coco, images=((1, 40, 50),)):
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    for iid, h, w in images:
        Image.fromarray(np.full((h, w, 3), iid * 20, np.uint8)).save(img_dir / f"{iid}.png")
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    return path, img_dir


def _good():
    mask = np.zeros((40, 50), np.uint8)
    mask[5:15, 10:30] = 1
    rle = encode(mask)
    return {
        "images": [
            {"id": 1, "file_name": "1.png", "height": 40, "width": 50},
            {"id": 2, "file_name": "2.png", "height": 40, "width": 50},
        ],
        "categories": [{"id": 0, "name": "zero"}, {"id": 7, "name": "seven"}, {"id": 3, "name": "three"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "bbox": [10, 5, 20, 10],
                "segmentation": rle,
                "iscrowd": 0,
                "area": 200,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 0,
                "bbox": [1, 20, 10, 10],
                "segmentation": [[1, 20, 11, 20, 11, 30, 1, 30]],
                "iscrowd": 0,
                "area": 100,
            },
            {
                "id": 3,
                "image_id": 1,
                "category_id": 3,
                "bbox": [30, 30, 3, 10],
                "iscrowd": 0,
                "area": 30,
                "segmentation": {"size": [40, 50], "counts": [1230, 10, 30, 10, 30, 10, 680]},
            },
            {
                "id": 4,
                "image_id": 1,
                "category_id": 3,
                "bbox": [10, 5, 20, 10],
                "segmentation": rle,
                "iscrowd": 1,
                "area": 200,
            },
        ],
    }


def test_loading_maps_sparse_ids_and_excludes_crowd(tmp_path):
    path, img_dir = _write(tmp_path, _good(), images=((1, 40, 50), (2, 40, 50)))
    ds = CocoInstances(path, img_dir, with_masks=True, check_files=True)
    assert ds.contiguous_to_cat_id == [0, 3, 7] and ds.class_names == ["zero", "three", "seven"]
    assert len(ds) == 2  # the empty image is kept for evaluation
    img, t = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 40, 50)
    assert t["labels"].tolist() == [2, 0, 1]  # crowd annotation 4 left out
    torch.testing.assert_close(t["boxes"][0], torch.tensor([10.0, 5.0, 30.0, 15.0]))
    assert t["masks"].shape == (3, 40, 50) and int(t["masks"][0].sum()) == 200
    assert int(t["masks"][1].sum()) > 0 and int(t["masks"][2].sum()) == 30  # polygon, uncompressed RLE
    assert len(CocoInstances(path, img_dir, filter_empty=True)) == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["annotations"][1].update(segmentation=[[1, 2, 3, 4]]), "polygon with 2 point(s)"),
        (lambda c: c["annotations"][0].update(category_id=99), "unknown category_id 99"),
        (lambda c: c["annotations"][0].update(segmentation=None, bbox=[10, 5, 0, 10]), "empty box [10, 5, 0, 10]"),
        (lambda c: c["annotations"][0].update(segmentation=[], bbox=[55, 5, 20, 10]), "(in the 50x40 image, after"),
        (lambda c: c["annotations"][0].update(segmentation={"size": [40, 60], "counts": "x"}), "RLE size [40, 60]"),
        (lambda c: c["annotations"][0].update(bbox=[1, 2, float("nan"), 4]), "bbox is not 4 finite numbers"),
        (lambda c: c["annotations"][1].update(id=1), "duplicated annotation id"),
        (lambda c: c["images"].append(dict(c["images"][0])), "duplicated image id"),
        (lambda c: c["annotations"][0].update(image_id=42), "image_id refers to no image"),
        (lambda c: c["images"][0].update(width=60), "the (oriented) image is 50x40"),
    ],
)
def test_check_reports_problem_with_ids(tmp_path, mutate, message):
    coco = _good()
    mutate(coco)
    path, img_dir = _write(tmp_path, coco, images=((1, 40, 50), (2, 40, 50)))
    problems = check_file(path, img_dir)
    assert any(message in str(p) for p in problems), [str(p) for p in problems]
    assert all(str(path) in str(p) for p in problems)
    with pytest.raises(DataError, match="problem"):
        CocoInstances(path, img_dir, check_files=True)


def test_check_unreadable_json_and_image(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert "not valid JSON" in str(check_file(bad)[0])
    bad.write_text(json.dumps({"images": []}))
    assert "missing or non-list key(s): annotations, categories" in str(check_file(bad)[0])
    path, img_dir = _write(tmp_path, _good(), images=((1, 40, 50), (2, 40, 50)))
    (img_dir / "2.png").write_bytes(b"not an image")
    assert any("unreadable image" in str(p) and "image id 2" in str(p) for p in check_file(path, img_dir))


def test_data_yaml_and_transforms(tmp_path, synth_data):
    spec = load_data(synth_data)
    assert set(spec.splits) == {"train", "val"} and spec.names[0] == "circle"
    (tmp_path / "d.yaml").write_text("path: .\ntrain: {images: im}\n")
    with pytest.raises(DataError, match="must be"):
        load_data(tmp_path / "d.yaml")
    # detectron2's ResizeShortestEdge arithmetic
    assert shortest_edge_size(480, 640, 800, 1333) == (800, 1067)
    assert shortest_edge_size(100, 1000, 800, 1333) == (133, 1333)
    tf = build_transforms(True, (64,), "choice", 100, 64, 100, hflip=False)
    img = torch.zeros(3, 40, 50, dtype=torch.uint8)
    target = {
        "boxes": torch.tensor([[10.0, 5.0, 30.0, 15.0], [49.0, 0, 52.0, 3.0]]),
        "labels": torch.tensor([1, 2]),
    }
    out_img, out_t = tf(img, target)
    assert out_img.shape == (3, 64, 80)
    torch.testing.assert_close(out_t["boxes"][0], torch.tensor([16.0, 8.0, 48.0, 24.0]))
    assert out_t["labels"].tolist() == [1, 2] and float(out_t["boxes"][1, 2]) == 80.0  # clipped


def test_flip_moves_boxes_and_masks():
    from blendseg.data.transforms import HFlip, ToTvTensors

    img = torch.zeros(3, 10, 20, dtype=torch.uint8)
    masks = torch.zeros(1, 10, 20, dtype=torch.uint8)
    masks[0, 2:4, 1:5] = 1
    t = {"boxes": torch.tensor([[1.0, 2.0, 5.0, 4.0]]), "labels": torch.tensor([0]), "masks": masks}
    img, t = ToTvTensors()(img, t)
    _, out = HFlip(p=1.0)(img, t)
    torch.testing.assert_close(out["boxes"].as_subclass(torch.Tensor), torch.tensor([[15.0, 2.0, 19.0, 4.0]]))
    assert out["masks"][0, 2:4, 15:19].all() and int(out["masks"].sum()) == 8


def test_eval_shards_cover_each_image_once(monkeypatch):
    import blendseg.data.loader as loader

    seen = []
    for rank in range(3):
        monkeypatch.setattr(loader, "get_world_size", lambda: 3)
        monkeypatch.setattr(loader, "get_rank", lambda r=rank: r)
        dl = loader.build_loader(list(range(10)), 4, train=False, num_workers=0)
        seen += list(dl.sampler)
    assert sorted(seen) == list(range(10))


def test_sem_seg_paints_every_annotation_in_json_order_crowd_included(tmp_path):
    path, img_dir = _write(tmp_path, _good(), images=((1, 40, 50), (2, 40, 50)))
    ds = CocoInstances(path, img_dir, with_masks=True, with_sem_seg=True)
    _, t = ds[0]
    sem = t["sem_seg"]
    assert sem.shape == (40, 50) and sem.dtype == torch.uint8
    # the crowd annotation (id 4, category 3 -> contiguous 1) comes last and repaints the first mask's pixels
    assert torch.equal(sem[t["masks"][0].bool()], torch.full((200,), 2, dtype=torch.uint8))
    assert (sem[t["masks"][2].bool()] == 2).all()  # annotation 3 (category 3) stays class 1 + 1
    assert (sem[t["masks"][1].bool()] == 1).all()  # the polygon of category 0
    assert int((sem == 0).sum()) == 40 * 50 - int(t["masks"].amax(0).sum())


def test_sem_seg_moves_with_resize_and_flip(synth_data):
    spec = load_data(synth_data)
    tf = build_transforms(True, (64,), "choice", 1000, 64, 1000, hflip=True)
    ds = CocoInstances(spec.splits["train"].annotations, spec.splits["train"].images, True, True, True, tf)
    for i in range(6):
        img, t = ds[i]
        assert t["sem_seg"].shape == img.shape[-2:] and type(t["sem_seg"]) is torch.Tensor
        # without crowd overlap the map is the masks painted in order (nearest resize commutes with painting)
        painted = torch.zeros_like(t["sem_seg"])
        for m, c in zip(t["masks"], t["labels"]):
            painted[m.bool()] = int(c) + 1
        covered = t["masks"].amax(0).bool()
        assert torch.equal(t["sem_seg"][covered], painted[covered])


def test_aspect_ratio_grouping_batches_one_orientation(synth_data):
    from blendseg.data.loader import build_loader

    spec = load_data(synth_data)
    tf = build_transforms(True, (64,), "choice", 1000, 64, 1000, hflip=False)
    ds = CocoInstances(spec.splits["train"].annotations, spec.splits["train"].images, True, transforms=tf)
    ratios = ds.aspect_ratios()
    assert {r > 1 for r in ratios} == {True, False}  # both orientations present
    loader = build_loader(ds, 3, True, num_workers=0, group_by_aspect=True)
    seen = 0
    for images, targets in loader:
        landscape = {images.image_sizes[i][1] > images.image_sizes[i][0] for i in range(len(targets))}
        assert len(landscape) == 1 and len(targets) == 3
        seen += 3
    assert seen >= len(ds) - 2 * 2  # at most one partial bucket per orientation dropped


def test_polygons_follow_resize_and_flip_and_give_box_targets(synth_data):
    import random

    from blendseg.data.transforms import HFlip
    from blendseg.ops.masks import crop_and_resize_masks, instance_mask_targets
    from blendseg.ops.rle import decode as decode_segm

    spec = load_data(synth_data)
    tf = build_transforms(True, (150,), "choice", 1000, 150, 1000, hflip=False)
    tf.transforms.insert(2, HFlip(1.0))  # after the resize, before the filter: always flip
    split = spec.splits["train"]
    ds = CocoInstances(split.annotations, split.images, True, True, with_polygons=True, transforms=tf)
    random.seed(0)
    checked = 0
    for i in range(6):
        img, t = ds[i]
        h, w = img.shape[-2:]
        assert len(t["polygons"]) == len(t["masks"]) == len(t["boxes"])
        for rings, m in zip(t["polygons"], t["masks"]):
            if rings is None:
                continue
            full = torch.from_numpy(decode_segm([r.tolist() for r in rings], h, w)).bool()
            iou = (full & m.bool()).sum() / (full | m.bool()).sum().clamp(min=1)
            assert iou > 0.8  # the polygons moved with the (nearest-resized, flipped) masks
            checked += 1
        targets = instance_mask_targets(t, 28)
        bitmask = crop_and_resize_masks(t["masks"], t["boxes"], 28)
        inter, union = (targets * bitmask).sum((1, 2)), ((targets + bitmask) > 0).sum((1, 2))
        assert (inter / union.clamp(min=1)).mean() > 0.8
    assert checked > 5


def test_repeat_factors_by_hand_and_their_sampling():
    """detectron2's rule on 4 images, class 1 in all of them, class 2 in the last only, crowd ignored: with t = 0.5,
    f(1) = 1 -> r = 1, f(2) = 1/4 -> r = sqrt(2); the last image comes sqrt(2) times an epoch on average, the others
    once; two processes get equal shares of one draw."""
    import math

    from blendseg.data.loader import RepeatFactorSampler, repeat_factors

    images = [{"id": i} for i in range(4)]
    anns = {0: [{"category_id": 1}], 1: [{"category_id": 1}], 2: [{"category_id": 1}, {"category_id": 2, "iscrowd": 1}],
            3: [{"category_id": 1}, {"category_id": 2}]}  # fmt: skip
    ds = type("DS", (), {"images": images, "anns": anns, "__len__": lambda self: 4})()
    factors = repeat_factors(ds, 0.5)
    assert factors[:3] == [1.0, 1.0, 1.0] and factors[3] == pytest.approx(math.sqrt(2))
    counts, epochs = [0] * 4, 2000
    one = RepeatFactorSampler(ds, factors, num_replicas=1, rank=0, seed=3)
    for epoch in range(epochs):
        one.set_epoch(epoch)
        for e, i in one:
            assert e == epoch
            counts[i] += 1
    assert counts[:3] == [epochs] * 3 and counts[3] / epochs == pytest.approx(math.sqrt(2), abs=0.03)
    shares = []
    for rank in (0, 1):
        s = RepeatFactorSampler(ds, factors, num_replicas=2, rank=rank, seed=3)
        s.set_epoch(7)
        shares.append([i for _, i in s])
    one.set_epoch(7)
    drawn = [i for _, i in one]
    assert len(shares[0]) == len(shares[1]) and sorted(set(shares[0] + shares[1])) == sorted(set(drawn))
