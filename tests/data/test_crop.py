"""Training crops (``data/crop.py``): AdelaiDet's RandomCropWithInstance and tiles of large images, the window
chosen from the boxes and the target built inside it."""

from __future__ import annotations

import json
import random
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

from blendseg.data.coco import CocoInstances, mask_boxes
from blendseg.data.crop import InstanceCrop, corner_range, crop_of, crop_size, crossing, grow_to_whole
from blendseg.ops.rle import encode


def test_crop_sizes_follow_detectron2s_types():
    random.seed(0)
    assert crop_size("relative", (0.5, 0.25), 100, 200) == (50, 50)
    assert crop_size("absolute", (640, 640), 300, 1000) == (300, 640)  # never larger than the image
    for _ in range(20):
        ch, cw = crop_size("relative_range", (0.9, 0.9), 100, 200)
        assert 90 <= ch <= 100 and 180 <= cw <= 200
        ch, cw = crop_size("absolute_range", (50, 80), 60, 200)
        assert 50 <= ch <= 60 and 50 <= cw <= 80
    with pytest.raises(ValueError, match="crop type"):
        InstanceCrop("square")


def test_the_window_holds_the_centre_of_a_box():
    boxes = np.array([[10.0, 20.0, 30.0, 50.0]])
    crop = InstanceCrop("absolute", (40, 40))
    for seed in range(50):
        random.seed(seed)
        x0, y0, x1, y1 = crop(boxes, 200, 300)
        assert (x1 - x0, y1 - y0) == (40, 40) and x0 >= 0 and x1 <= 300 and y0 >= 0 and y1 <= 200
        assert x0 <= 20 <= x1 and y0 <= 35 <= y1
    assert corner_range(5.0, 40, 300) == (0, 5)


def test_without_cutting_the_window_grows_until_no_box_crosses_it():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 260, (30, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (30, 2))], 1)
    crop = InstanceCrop("absolute", (60, 60), cut=False)
    for seed in range(20):
        random.seed(seed)
        window = crop(boxes, 300, 300)
        assert window[2] - window[0] >= 60 and window[3] - window[1] >= 60
        assert not crossing(boxes, window, eps=2.0).any()  # AdelaiDet truncates corner and size to pixels
    assert grow_to_whole(np.array([[0.0, 0.0, 10.0, 10.0]]), (5.0, 5.0, 20.0, 20.0)) == (0.0, 0.0, 20.0, 20.0)


def test_tiles_cut_fewer_instances_than_a_random_window():
    """Objects on a grid with gaps: of 16 windows, the kept one cuts far fewer than one drawn alone."""
    xs = np.arange(0, 1000, 50.0)
    boxes = np.array([[x, y, x + 30, y + 30] for x in xs for y in xs])
    counts = {}
    for tries in (1, 16):
        crop = InstanceCrop("absolute", (256, 256), tries=tries)
        random.seed(0)
        counts[tries] = np.mean([crossing(boxes, crop(boxes, 1000, 1000)).sum() for _ in range(40)])
    assert counts[16] < 0.5 * counts[1], counts


def test_crop_of_reads_the_data_config():
    from blendseg.config import DataConfig

    assert crop_of(DataConfig()) is None
    assert crop_of(DataConfig(tile=512)) == InstanceCrop("absolute", (512, 512), cut=True, tries=16)
    assert crop_of(DataConfig(crop_type="relative_range", crop_instance=False)).cut is False


def _write_split(tmp_path, h: int, w: int, objects: list[tuple[int, int, int, int]], polygons: bool = False):
    """One h x w image with rectangles (x0, y0, x1, y1) as RLE masks (or polygons), and a crowd region."""
    img = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    (tmp_path / "images").mkdir()
    Image.fromarray(img).save(tmp_path / "images" / "a.png")
    anns = []
    for i, (x0, y0, x1, y1) in enumerate(objects):
        m = np.zeros((h, w), np.uint8)
        m[y0:y1, x0:x1] = 1
        seg = [[x0, y0, x1, y0, x1, y1, x0, y1]] if polygons else encode(m)
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1 + i % 2, "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "area": float(m.sum()), "segmentation": seg, "iscrowd": 0})  # fmt: skip
    anns.append({"id": 99, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100.0, "iscrowd": 1,
                 "segmentation": encode(np.pad(np.ones((10, 10), np.uint8), ((0, h - 10), (0, w - 10))))})  # fmt: skip
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": h, "width": w}], "annotations": anns,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return tmp_path / "ann.json", tmp_path / "images"


def test_a_cropped_sample_is_the_full_sample_cut_at_the_window(tmp_path):
    """Image, masks, thing map and crowd boxes are the full ones cut; boxes are the cut masks' (AdelaiDet); an
    instance outside the window keeps an empty box (the transforms then drop it)."""
    ann, images = _write_split(tmp_path, 120, 200, [(10, 10, 60, 50), (55, 40, 150, 110), (170, 5, 195, 30)])
    kw = dict(with_masks=True, with_sem_seg=True, with_crowd_boxes=True)
    full_im, full = CocoInstances(ann, images, **kw)[0]
    window = (40, 20, 140, 100)
    ds = CocoInstances(ann, images, crop=lambda boxes, h, w: window, **kw)
    im, t = ds[0]
    cut = (slice(20, 100), slice(40, 140))
    assert torch.equal(im, full_im[:, cut[0], cut[1]])
    assert im.untyped_storage().nbytes() == im.numel()  # a copy: a worker does not send the whole image
    assert torch.equal(t["masks"], full["masks"][:, cut[0], cut[1]])
    assert torch.equal(t["sem_seg"], full["sem_seg"][cut])
    assert torch.equal(t["boxes"], torch.tensor([[0.0, 0, 20, 30], [15, 20, 100, 80], [0, 0, 0, 0]]))
    assert torch.equal(t["boxes"], mask_boxes(t["masks"]))
    assert torch.equal(t["crowd_boxes"], full["crowd_boxes"] - torch.tensor([40.0, 20, 40, 20]))


def test_polygons_move_with_the_window(tmp_path):
    ann, images = _write_split(tmp_path, 120, 200, [(10, 10, 60, 50)], polygons=True)
    ds = CocoInstances(ann, images, with_masks=True, with_polygons=True, crop=lambda boxes, h, w: (5, 8, 105, 108))
    ring = ds[0][1]["polygons"][0][0]
    assert np.allclose(ring, [5, 2, 55, 2, 55, 42, 5, 42])


def test_a_tile_of_a_large_image_never_holds_all_its_masks(tmp_path):
    """40 instances on a 4000 x 3000 image: at full size their masks would take 480 MB; a 256-px tile's target
    is built one mask at a time: the peak is that of reading the image."""
    h, w = 3000, 4000
    rng = np.random.default_rng(1)
    objects = []
    for _ in range(40):
        x, y = int(rng.integers(0, w - 100)), int(rng.integers(0, h - 100))
        objects.append((x, y, x + 80, y + 60))
    ann, images = _write_split(tmp_path, h, w, objects)
    ds = CocoInstances(ann, images, with_masks=True, crop=InstanceCrop("absolute", (256, 256), tries=16))
    random.seed(0)
    tracemalloc.start()
    image, target = ds[0]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert image.shape == (3, 256, 256) and target["masks"].shape[1:] == (256, 256)
    assert (target["masks"].flatten(1).sum(1) > 0).any()  # the window holds an instance's centre
    assert peak < 10 * h * w, f"{peak / 1e6:.0f} MB"  # the RGB image read is 3 h w; all masks would be 40 h w
