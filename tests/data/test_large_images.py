"""Large JPEGs decoded at a reduced size for training (``data.decode_reduced``): the sample the transforms make
from the reduced decode is the one they make from the full one, up to resampling."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from blendseg.data.coco import CocoInstances
from blendseg.data.images import read_image
from blendseg.data.transforms import build_transforms
from blendseg.ops.rle import encode


def _photo(tmp_path, w: int = 1024, h: int = 768):
    """A JPEG with a polygon square, a polygon triangle and an RLE disc, their COCO annotations."""
    yy, xx = np.mgrid[:h, :w]
    rgb = np.stack([(xx * 255 // w), (yy * 255 // h), np.full_like(xx, 90)], -1).astype(np.uint8)
    disc = (xx - 700) ** 2 + (yy - 500) ** 2 < 120**2
    rgb[disc] = (250, 30, 30)
    rgb[100:300, 100:400] = (20, 200, 20)
    (tmp_path / "images").mkdir()
    Image.fromarray(rgb).save(tmp_path / "images" / "a.jpg", quality=92)
    square = [100, 100, 400, 100, 400, 300, 100, 300]
    tri = [500, 100, 900, 100, 700, 300]
    rle = encode(disc)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [square], "bbox": [100, 100, 300, 200]},
        {"id": 2, "image_id": 1, "category_id": 1, "segmentation": [tri], "bbox": [500, 100, 400, 200]},
        {"id": 3, "image_id": 1, "category_id": 2, "segmentation": rle, "bbox": [580, 380, 240, 240]},
    ]
    for a, area in zip(anns, (60000.0, 40000.0, float(disc.sum()))):
        a.update(iscrowd=0, area=area)
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": w, "height": h}], "annotations": anns,
            "categories": [{"id": 1, "name": "shape"}, {"id": 2, "name": "disc"}]}  # fmt: skip
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    return tmp_path / "ann.json", tmp_path / "images"


def test_read_image_decodes_large_jpegs_at_a_dct_scale_never_below_min_side(tmp_path):
    _photo(tmp_path)
    path = tmp_path / "images" / "a.jpg"
    assert read_image(path).shape == (3, 768, 1024)
    assert read_image(path, min_side=96).shape == (3, 96, 128)  # 1/8
    assert read_image(path, min_side=200).shape == (3, 192 * 2, 256 * 2)  # 1/2: 1/4 would give 192 < 200
    assert read_image(path, min_side=400).shape == (3, 768, 1024)  # under twice: as it is
    Image.open(path).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png", min_side=96).shape == (3, 768, 1024)  # PNG has no DCT scaling


def test_a_reduced_decode_gives_the_training_sample_of_the_full_one(tmp_path):
    ann, images = _photo(tmp_path)
    tf = build_transforms(True, (96,), "choice", 160, 96, 160, hflip=False)  # what training runs
    kw = dict(with_masks=True, with_polygons=True, with_sem_seg=True, transforms=tf)
    (full_im, full), (small_im, small) = (CocoInstances(ann, images, decode_min_side=m, **kw)[0] for m in (0, 96))
    assert full_im.shape == small_im.shape == (3, 96, 128)
    assert (full_im.float() - small_im.float()).abs().mean() < 4  # one picture, resampled two ways
    torch.testing.assert_close(small["boxes"], full["boxes"], atol=1e-3, rtol=1e-4)
    for a, b in zip(full["masks"].bool(), small["masks"].bool()):
        assert float((a & b).sum() / (a | b).sum()) > 0.9
    for pa, pb in zip(full["polygons"], small["polygons"]):
        if pa is not None:
            np.testing.assert_allclose(np.concatenate(pa), np.concatenate(pb), atol=1e-6)
    assert float((full["sem_seg"] == small["sem_seg"]).float().mean()) > 0.97
    assert full["orig_size"].tolist() == small["orig_size"].tolist() == [768, 1024]
