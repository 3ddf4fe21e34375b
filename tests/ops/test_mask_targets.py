"""Training mask targets of an image's instances: polygon instances rasterised inside their boxes (the reference's
MASK_FORMAT "polygon"), the others (RLE, ``None`` in ``polygons``) cropped from their bitmasks with RoIAlign."""

from __future__ import annotations

import numpy as np
import torch

from blendseg.ops.masks import crop_and_resize_masks, instance_mask_targets
from blendseg.ops.rle import rasterize_polygons_in_box


def test_polygon_instances_are_rasterised_in_their_boxes_and_the_rest_cropped_from_bitmasks():
    masks = torch.zeros(3, 40, 50, dtype=torch.uint8)
    masks[0, 5:20, 5:30] = 1
    masks[1, 10:35, 20:45] = 1
    masks[2, 2:12, 30:48] = 1
    boxes = torch.tensor([[5.0, 5.0, 30.0, 20.0], [20.0, 10.0, 45.0, 35.0], [30.0, 2.0, 48.0, 12.0]])
    triangle = [torch.tensor([5.0, 5.0, 30.0, 5.0, 5.0, 20.0])]  # not the bitmask's rectangle
    diamond = [torch.tensor([30.0, 7.0, 39.0, 2.0, 48.0, 7.0, 39.0, 12.0])]
    target = {"masks": masks, "boxes": boxes, "polygons": [triangle, None, diamond]}
    out = instance_mask_targets(target, 28)
    assert out.shape == (3, 28, 28) and out.dtype == torch.float32
    for i, rings in ((0, triangle), (2, diamond)):
        want = rasterize_polygons_in_box([r.tolist() for r in rings], boxes[i].tolist(), 28)
        np.testing.assert_array_equal(out[i].numpy(), want)
    torch.testing.assert_close(out[1], crop_and_resize_masks(masks[1:2], boxes[1:2], 28)[0])
    assert 0.3 < float(out[0].mean()) < 0.7  # a triangle fills about half its box
    without = instance_mask_targets({"masks": masks, "boxes": boxes}, 28)
    torch.testing.assert_close(without, crop_and_resize_masks(masks, boxes, 28))


def test_mask_extent_is_torchvisions_box_past_the_last_pixel():
    """ops.masks.mask_extent against torchvision.ops.masks_to_boxes (whose x1 / y1 are the last pixel's own)."""
    from torchvision.ops import masks_to_boxes

    from blendseg.ops.masks import mask_extent

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        m = torch.zeros(40, 50, dtype=torch.bool)
        y0, x0 = torch.randint(0, 30, (2,), generator=g).tolist()
        m[y0 : y0 + 7, x0 : x0 + 11] = torch.rand(min(7, 40 - y0), min(11, 50 - x0), generator=g) > 0.3
        if not m.any():
            continue
        x0r, y0r, x1r, y1r = masks_to_boxes(m[None])[0].int().tolist()
        assert mask_extent(m) == (y0r, x0r, y1r + 1, x1r + 1)
    assert mask_extent(torch.zeros(5, 5, dtype=torch.bool)) is None
