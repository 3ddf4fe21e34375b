"""YOLACT's SSD augmentation and square resize: geometry of boxes, masks and crowd boxes."""

import random

import torch

from blendseg.config import DataConfig
from blendseg.data.coco import CocoInstances
from blendseg.data.sources import load_data
from blendseg.data.ssd_augment import expand, mirror, photometric_distort, random_sample_crop, resize_square
from blendseg.data.transforms import transforms_for


def _target():
    masks = torch.zeros(2, 60, 80, dtype=torch.uint8)
    masks[0, 10:30, 5:25] = 1
    masks[1, 35:55, 50:78] = 1
    return {
        "boxes": torch.tensor([[5.0, 10, 25, 30], [50, 35, 78, 55]]),
        "labels": torch.tensor([0, 2]),
        "masks": masks,
        "crowd_boxes": torch.tensor([[0.0, 40, 20, 60]]),
    }


def _mask_box(m):
    ys, xs = m.nonzero(as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


def test_expand_shifts_boxes_and_pads_masks_with_the_mean_canvas():
    random.seed(0)
    image = torch.full((3, 60, 80), 200.0)
    for _ in range(10):
        img, t = expand(image, _target(), fill=(1.0, 2.0, 3.0))
        if img.shape[-1] == 80:
            continue  # p = 0.5: unchanged
        for m, b in zip(t["masks"], t["boxes"]):
            torch.testing.assert_close(_mask_box(m), b)
        assert img[0].eq(1.0).any() and img[2].eq(3.0).any() and img.eq(200.0).sum() == 3 * 60 * 80
        return
    raise AssertionError("expand never expanded")


def test_random_crop_keeps_centre_inside_instances_clipped_and_consistent():
    random.seed(1)
    image = torch.rand(3, 60, 80)
    cropped = 0
    for _ in range(30):
        img, t = random_sample_crop(image, _target())
        h, w = img.shape[-2:]
        assert len(t["boxes"]) >= 1 and len(t["boxes"]) == len(t["labels"]) == len(t["masks"])
        assert t["masks"].shape[-2:] == (h, w)
        assert (t["boxes"][:, 0::2] >= 0).all() and (t["boxes"][:, 2::2] <= w).all()
        for m, b in zip(t["masks"], t["boxes"]):
            torch.testing.assert_close(_mask_box(m), b)  # the masks here fill their boxes
        assert (t["crowd_boxes"][:, 2:] <= torch.tensor([w, h])).all()
        cropped += (h, w) != (60, 80)
    assert cropped > 5


def test_mirror_and_square_resize():
    random.seed(0)
    t = _target()
    img, t2 = mirror(torch.rand(3, 60, 80), t)
    while img.shape and torch.equal(t2["boxes"], t["boxes"]):
        img, t2 = mirror(torch.rand(3, 60, 80), t)
    torch.testing.assert_close(t2["boxes"][0], torch.tensor([55.0, 10, 75, 30]))
    torch.testing.assert_close(_mask_box(t2["masks"][0]), t2["boxes"][0])
    img, t3 = resize_square(torch.rand(3, 60, 80), t, 120)
    assert img.shape == (3, 120, 120) and t3["masks"].shape == (2, 120, 120)
    torch.testing.assert_close(t3["boxes"][0], torch.tensor([7.5, 20, 37.5, 60]))
    torch.testing.assert_close(_mask_box(t3["masks"][0]), torch.tensor([8.0, 20, 38, 60]), atol=1, rtol=0)


def test_photometric_distort_stays_in_range():
    random.seed(0)
    x = torch.rand(3, 20, 20) * 255
    outs = [photometric_distort(x) for _ in range(10)]
    assert all(o.min() >= 0 and o.max() <= 255 for o in outs)
    assert any(not torch.allclose(o, x) for o in outs)


def test_yolact_pipeline_on_synthetic_data(synth_data):
    spec = load_data(synth_data)
    d = DataConfig(square_size=96, augment="ssd", with_masks=True, with_crowd_boxes=True)
    ds = CocoInstances(spec.splits["train"].annotations, spec.splits["train"].images, True, True,
                       with_crowd_boxes=True, transforms=transforms_for(d, True, (123.0, 117.0, 104.0)))  # fmt: skip
    random.seed(0)
    for i in range(8):
        img, t = ds[i]
        assert img.shape == (3, 96, 96) and t["masks"].shape[-2:] == (96, 96)
        assert len(t["boxes"]) >= 1 and (t["boxes"][:, 2:] > t["boxes"][:, :2]).all()
        assert "crowd_boxes" in t and type(t["crowd_boxes"]) is torch.Tensor
