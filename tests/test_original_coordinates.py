"""Predictions come back in the original image's pixels after the test-time resize: the same picture at twice its
size (both resized to the same network input) gives the same detections at twice the coordinates, and masks that
cover the same pixels at twice the resolution. Trained models (conftest's ``trained``), so the detections are few,
confident and stable."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from torchvision.ops import box_iou

import blendseg


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["blendmask_tiny_test", "yolact_tiny_test", "meinst_tiny_test"])
def test_an_image_twice_as_large_gives_boxes_and_masks_twice_as_large(preset, trained, overfit_image):
    small = overfit_image()
    h, w = small.shape[:2]
    large = np.asarray(Image.fromarray(small).resize((2 * w, 2 * h), Image.BILINEAR))
    model = blendseg.load(trained(preset) / "weights" / "last.pt", "cpu")
    a, b = (model.predict(im, conf=0.3)[0] for im in (small, large))
    assert a.image_size == (h, w) and b.image_size == (2 * h, 2 * w)
    assert len(a) >= 1, "the trained model finds the objects it was trained on"
    assert abs(len(a) - len(b)) <= 1
    iou = box_iou(a.boxes * 2, b.boxes)  # a's boxes doubled against b's
    best, match = iou.max(1)
    assert float(best.median()) > 0.9, iou
    same_label = a.labels == b.labels[match]
    assert float(same_label.float().mean()) >= 0.75
    # b's boxes are twice a's in width and height, not the same size (a missing rescale) nor 4x (a double one)
    ratio = (b.boxes[match, 2:] - b.boxes[match, :2]) / (a.boxes[:, 2:] - a.boxes[:, :2]).clamp(min=1)
    assert 1.8 < float(ratio.median()) < 2.2
    # masks: b's, taken at every other pixel, cover a's (the confident detections: weak ones are small and unstable)
    ious = []
    for i in (a.scores >= 0.5).nonzero()[:, 0].tolist():
        ma, mb = a.masks[i], b.masks[int(match[i])][::2, ::2]
        ious.append(float((ma & mb).sum() / (ma | mb).sum().clamp(min=1)))
    assert ious and float(np.median(ious)) > 0.8, ious
