"""Training crops chosen from the annotations' boxes, before the resize: AdelaiDet's ``RandomCropWithInstance``
(``INPUT.CROP``) and training on tiles of large images (``data.tile``).

A crop is a window ``(x0, y0, x1, y1)`` of the image in pixels. The dataset cuts the image and builds the target
inside it (:meth:`~blendseg.data.coco.CocoInstances.get_target`), so a large image's masks are never all held at
full size. Randomness is Python's ``random``, which the training loader seeds per sample.

The window always holds the centre of one annotation's box, picked at random, so a crop is never empty where the
image is not (AdelaiDet's rule). Then:

- ``cut=True`` (AdelaiDet's default ``CROP_INSTANCE``): instances crossing the border are cut;
- ``cut=False``: the window grows until no box crosses its border (AdelaiDet's ``adjust_crop``);
- ``tries=N`` (tiles): of N windows drawn, the one that cuts the fewest boxes; the size never changes, so a
  training tile is what ``predict --slice`` shows the network. The cut instances keep the part inside the tile.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

CROP_TYPES = ("relative_range", "relative", "absolute", "absolute_range")


def crop_size(kind: str, size: tuple[float, float], h: int, w: int) -> tuple[int, int]:
    """detectron2's ``RandomCrop.get_crop_size``: the (ch, cw) of a crop of an h x w image."""
    if kind == "relative":
        return int(h * size[0] + 0.5), int(w * size[1] + 0.5)
    if kind == "relative_range":
        ch, cw = (s + random.random() * (1 - s) for s in size)
        return int(h * ch + 0.5), int(w * cw + 0.5)
    if kind == "absolute":
        return min(int(size[0]), h), min(int(size[1]), w)
    if kind == "absolute_range":
        lo, hi = int(size[0]), int(size[1])
        return random.randint(min(h, lo), min(h, hi)), random.randint(min(w, lo), min(w, hi))
    raise ValueError(f"crop type must be one of {', '.join(CROP_TYPES)}, got {kind!r}")


def corner_range(center: float, crop: int, extent: int) -> tuple[int, int]:
    """The first pixels (lo, hi inclusive) of a crop of ``crop`` pixels that holds ``center`` (AdelaiDet's
    ``gen_crop_transform_with_instance``, one axis)."""
    lo = max(math.floor(center) - crop, 0)
    hi = min(max(extent - crop, 0), math.ceil(center))
    return lo, max(lo, hi)


def crossing(boxes: np.ndarray, window: tuple[float, float, float, float], eps: float = 1e-3) -> np.ndarray:
    """(M,) bool: the boxes (M, 4) xyxy that a border of ``window`` cuts (part inside, part outside)."""
    x0, y0, x1, y1 = window
    inside = (boxes[:, 0] < x1) & (boxes[:, 2] > x0) & (boxes[:, 1] < y1) & (boxes[:, 3] > y0)
    whole = (boxes[:, 0] >= x0 - eps) & (boxes[:, 2] <= x1 + eps)
    whole &= (boxes[:, 1] >= y0 - eps) & (boxes[:, 3] <= y1 + eps)
    return inside & ~whole


def grow_to_whole(boxes: np.ndarray, window: tuple[float, float, float, float], eps: float = 1e-3, tries: int = 100):
    """AdelaiDet's ``adjust_crop`` until nothing changes: each border a box crosses moves out to the box's edge.
    None when it has not settled after ``tries`` rounds (AdelaiDet raises there)."""
    x0, y0, x1, y1 = window
    for _ in range(tries):
        moved = False
        for bx0, by0, bx1, by1 in boxes.tolist():
            if bx0 < x0 - eps and bx1 > x0 + eps:
                x0, moved = bx0, True
            if bx0 < x1 - eps and bx1 > x1 + eps:
                x1, moved = bx1, True
            if by0 < y0 - eps and by1 > y0 + eps:
                y0, moved = by0, True
            if by0 < y1 - eps and by1 > y1 + eps:
                y1, moved = by1, True
        if not moved:
            return x0, y0, x1, y1
    return None


@dataclass(frozen=True)
class InstanceCrop:
    """A crop of ``kind`` / ``size`` (detectron2's ``INPUT.CROP.TYPE`` / ``SIZE``) holding a random box's centre;
    ``cut`` and ``tries`` as the module says."""

    kind: str = "relative_range"
    size: tuple[float, float] = (0.9, 0.9)
    cut: bool = True
    tries: int = 1

    def __post_init__(self) -> None:
        if self.kind not in CROP_TYPES:
            raise ValueError(f"crop type must be one of {', '.join(CROP_TYPES)}, got {self.kind!r}")
        if self.tries < 1:
            raise ValueError(f"crop tries must be >= 1, got {self.tries}")

    def __call__(self, boxes: np.ndarray, h: int, w: int) -> tuple[int, int, int, int]:
        """The window (x0, y0, x1, y1) in pixels for an h x w image whose annotations have ``boxes`` (M, 4) xyxy."""
        ch, cw = crop_size(self.kind, self.size, h, w)
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        if (ch, cw) == (h, w):
            return 0, 0, w, h
        if len(boxes):
            x0b, y0b, x1b, y1b = boxes[random.randrange(len(boxes))].tolist()
            (ylo, yhi), (xlo, xhi) = corner_range((y0b + y1b) / 2, ch, h), corner_range((x0b + x1b) / 2, cw, w)
        else:  # nothing to hold: anywhere
            (ylo, yhi), (xlo, xhi) = (0, h - ch), (0, w - cw)
        best, fewest = None, None
        for _ in range(self.tries):
            y0, x0 = random.randint(ylo, yhi), random.randint(xlo, xhi)
            window = (x0, y0, x0 + cw, y0 + ch)
            n = int(crossing(boxes, window).sum()) if self.tries > 1 else 0
            if fewest is None or n < fewest:
                best, fewest = window, n
        if not self.cut:
            grown = grow_to_whole(boxes, best)
            if grown is None:
                return 0, 0, w, h
            best = grown
        x0, y0, x1, y1 = best  # AdelaiDet's CropTransform(int(x0), int(y0), int(w), int(h))
        return int(x0), int(y0), int(x0) + int(x1 - x0), int(y0) + int(y1 - y0)


def crop_of(d) -> InstanceCrop | None:
    """The training crop a :class:`~blendseg.config.DataConfig` names: ``tile`` > 0 gives tiles of that size
    (16 tries, instances cut where they must be); else ``crop_type`` (AdelaiDet's crop), or None."""
    if d.tile > 0:
        return InstanceCrop("absolute", (d.tile, d.tile), cut=True, tries=16)
    if d.crop_type:
        return InstanceCrop(d.crop_type, tuple(d.crop_size), cut=d.crop_instance)
    return None
