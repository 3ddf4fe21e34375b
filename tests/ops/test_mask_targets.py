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
