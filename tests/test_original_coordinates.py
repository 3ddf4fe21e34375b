"""Predictions come back in the original image's pixels after the test-time resize: the same picture at twice its
size (both resized to the same network input) gives the same detections at twice the coordinates, and masks that
cover the same pixels at twice the resolution. Trained models (conftest's ``trained``); the two runs' confident
detections are matched by label and box (tests/matching.py), not counted: the network inputs differ by the
resampling's rounding, so a detection near a threshold may fall either side of it."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import blendseg
from blendseg.zoo import suite_presets
from tests.matching import PRESENT, mask_iou, twins


@pytest.mark.slow
@pytest.mark.parametrize("preset", suite_presets(masks=True))
def test_an_image_twice_as_large_gives_boxes_and_masks_twice_as_large(preset, trained, overfit_image):
    small = overfit_image()
    h, w = small.shape[:2]
    large = np.asarray(Image.fromarray(small).resize((2 * w, 2 * h), Image.BILINEAR))
    model = blendseg.load(trained(preset) / "weights" / "last.pt", "cpu")
    a, b = (model.predict(im, conf=PRESENT)[0] for im in (small, large))
    assert a.image_size == (h, w) and b.image_size == (2 * h, 2 * w)
    forward, backward = twins(a, b, scale=2.0), twins(b, a, scale=0.5)
    assert forward, f"the trained model finds the objects it was trained on with confidence: {a.scores[:5]}"
    # each confident detection has its twin at twice (or half) the coordinates: not at the same size (a missing
    # rescale) nor at 4x (a double one), where the IoU would be at most 0.25 (a small box may move by a pixel or two)
    for i, j, iou in forward + backward:
        assert iou > 0.5, (i, j, iou)
    assert float(np.median([iou for *_, iou in forward])) > 0.9, forward
    ratio = [float((b.boxes[j, 2:] - b.boxes[j, :2]).mean() / (a.boxes[i, 2:] - a.boxes[i, :2]).mean())
             for i, j, _ in forward]  # fmt: skip
    assert 1.8 < float(np.median(ratio)) < 2.2, ratio
    # masks: b's, taken at every other pixel, cover a's
    ious = [mask_iou(a.masks[i], b.masks[j][::2, ::2]) for i, j, _ in forward]
    assert float(np.median(ious)) > 0.8, ious
