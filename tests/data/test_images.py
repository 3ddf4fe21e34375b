"""The one image reader on awkward files: EXIF orientation, 16-bit, palette, CMYK, alpha, broken files, arrays."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from blendseg.data.check import check_file
from blendseg.data.coco import CocoInstances
from blendseg.data.images import image_size, read_image
from blendseg.errors import DataError


def _scene(h=40, w=60):
    """A picture whose orientation is visible: a bright block in the top-left corner."""
    arr = np.full((h, w, 3), 40, np.uint8)
    arr[:10, :20] = (250, 30, 30)
    return arr


def test_exif_orientation_6_is_applied_and_sizes_swap(tmp_path):
    arr = _scene()
    pil = Image.fromarray(arr)
    exif = pil.getexif()
    exif[0x0112] = 6  # stored as is, shown rotated 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    pil.save(path, exif=exif, quality=95)
    img = read_image(path)
    assert img.shape == (3, 60, 40) and image_size(path) == (40, 60)
    upright = np.rot90(arr, k=-1)  # what a viewer shows
    assert np.abs(img.permute(1, 2, 0).numpy().astype(int) - upright.astype(int)).mean() < 6


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    ramp = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(ramp).save(path)
    img = read_image(path)
    assert img.shape == (3, 32, 64) and img.dtype == torch.uint8
    expected = np.round(ramp / 257.0)
    assert np.abs(img[0].numpy().astype(int) - expected).max() <= 1
    assert torch.equal(img[0], img[1]) and 120 < float(img.float().mean()) < 135  # mid grey, not white


@pytest.mark.parametrize("mode", ["P", "P+transparency", "CMYK", "RGBA", "LA", "L", "1"])
def test_other_modes_become_rgb(tmp_path, mode):
    arr = _scene()
    pil = Image.fromarray(arr)
    ext = "jpg" if mode == "CMYK" else "png"
    if mode == "P+transparency":
        pil = pil.convert("P")
        pil.info["transparency"] = 0
    else:
        pil = pil.convert(mode)
    path = tmp_path / f"x.{ext}"
    pil.save(path)
    img = read_image(path)
    assert img.shape == (3, 40, 60) and img.dtype == torch.uint8
    if mode in ("RGBA", "CMYK", "P"):  # colour kept
        block = img.permute(1, 2, 0).numpy().astype(float)[:10, :20].mean((0, 1))  # palette modes dither
        assert np.abs(block - (250, 30, 30)).max() < 30


def test_broken_files_name_themselves(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(_scene(200, 300)).save(good, quality=95)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(data[: len(data) // 3])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for path in (truncated, empty, tmp_path / "missing.png"):
        with pytest.raises(DataError, match=path.name):
            read_image(path)
    assert read_image(data).shape == (3, 200, 300)  # encoded bytes


def test_arrays_and_pil_images():
    assert read_image(_scene()).shape == (3, 40, 60)
    gray16 = np.full((5, 7), 65535, np.uint16)
    assert int(read_image(gray16).min()) == 255
    rgba = np.zeros((5, 7, 4), np.uint8)
    rgba[..., 3] = 255
    assert read_image(rgba).shape == (3, 5, 7)
    unit = np.full((5, 7, 3), 0.5, np.float32)
    assert int(read_image(unit)[0, 0, 0]) == 128
    assert torch.equal(read_image(Image.fromarray(_scene())), read_image(_scene()))
    with pytest.raises(DataError, match="shape"):
        read_image(np.zeros((2, 3, 5), np.uint8))


def test_dataset_and_check_use_the_oriented_size(tmp_path):
    pil = Image.fromarray(_scene())
    exif = pil.getexif()
    exif[0x0112] = 8
    (tmp_path / "images").mkdir()
    pil.save(tmp_path / "images" / "a.jpg", exif=exif)
    box = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], "iscrowd": 0, "area": 100}
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "height": 60, "width": 40}], "categories": [{"id": 1}]}
    coco["annotations"] = [box]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    assert [p.message for p in check_file(ann, tmp_path / "images")] == ["1 of 1 annotation(s) are box-only (no mask)"]
    image, _ = CocoInstances(ann, tmp_path / "images")[0]
    assert image.shape == (3, 60, 40)
    coco["images"][0].update(height=40, width=60)  # the stored, unrotated size: wrong for the picture people see
    ann.write_text(json.dumps(coco))
    assert "the (oriented) image is 40x60" in str(check_file(ann, tmp_path / "images")[0])
