"""YOLACT's training augmentation (official ``SSDAugmentation``, yolact.md §2.2) on tensors, and the square resize.

Order: photometric distort -> expand (zoom out onto a mean-filled canvas) -> random sample crop -> mirror, then
the pipeline squashes to S x S. Targets: ``boxes`` (M, 4) absolute xyxy, ``labels``, ``masks`` (M, H, W) uint8,
optionally ``crowd_boxes`` (K, 4) (kept by the same centre rule, never the only survivors).

Deviations, all documented: saturation uses torchvision's blend-with-grey instead of an HSV multiply and hue uses
torchvision's HSV shift (same range, +-18 degrees); the image is clamped to 0..255 after the photometric step (the
official keeps out-of-range floats); masks are resized by nearest (the official resizes them bilinearly and
binarises later at prototype resolution).
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

# (min IoU, max IoU) of the official sample options; None keeps the image. The IoU test is bugged in the official
# code (it never rejects a crop), so only "keep" vs "crop" matters; kept as the official draws for the same odds.
_CROP_MODES = (None, (0.1, None), (0.3, None), (0.7, None), (0.9, None), (None, None))


def photometric_distort(image: Tensor) -> Tensor:
    """(3, H, W) float 0..255: brightness +-32 (p .5); contrast x U(.5, 1.5) (p .5) first or last; saturation
    x U(.5, 1.5) (p .5); hue +-18 degrees (p .5)."""
    x = image.float()
    if random.random() < 0.5:
        x = x + random.uniform(-32, 32)

    def contrast(t: Tensor) -> Tensor:
        return t * random.uniform(0.5, 1.5) if random.random() < 0.5 else t

    def colour(t: Tensor) -> Tensor:
        t = t.clamp(0, 255) / 255
        if random.random() < 0.5:
            t = TF.adjust_saturation(t, random.uniform(0.5, 1.5))
        if random.random() < 0.5:
            t = TF.adjust_hue(t, random.uniform(-18, 18) / 360)
        return t * 255

    x = colour(contrast(x)) if random.random() < 0.5 else contrast(colour(x))
    return x.clamp(0, 255)


def expand(image: Tensor, target: dict, fill: tuple[float, float, float], max_ratio: float = 4.0) -> tuple:
    """With p .5 place the image at a random offset on a canvas ratio x larger (ratio ~ U(1, 4)) filled with the
    pixel mean; masks are zero-padded, boxes shifted."""
    if random.random() < 0.5:
        return image, target
    _, h, w = image.shape
    ratio = random.uniform(1, max_ratio)
    left, top = int(random.uniform(0, w * ratio - w)), int(random.uniform(0, h * ratio - h))
    H, W = int(h * ratio), int(w * ratio)
    canvas = torch.tensor(fill, dtype=image.dtype).view(3, 1, 1).expand(3, H, W).clone()
    canvas[:, top : top + h, left : left + w] = image
    target = dict(target)
    shift = torch.tensor([left, top, left, top], dtype=torch.float32)
    for key in ("boxes", "crowd_boxes"):
        if key in target:
            target[key] = target[key] + shift
    if "masks" in target:
        masks = target["masks"].new_zeros((target["masks"].shape[0], H, W))
        masks[:, top : top + h, left : left + w] = target["masks"]
        target["masks"] = masks
    return canvas, target


def random_sample_crop(image: Tensor, target: dict) -> tuple:
    """The official crop: draw a mode (keep, or crop); up to 50 tries of a crop of 0.3-1 x each side with aspect
    h/w in [0.5, 2]; keep instances whose box centre lies strictly inside; retry while none (or only crowds)."""
    _, h, w = image.shape
    boxes = target["boxes"]
    if boxes.shape[0] == 0:
        return image, target
    crowd = target.get("crowd_boxes", boxes.new_zeros((0, 4)))
    while True:
        if random.choice(_CROP_MODES) is None:
            return image, target
        for _ in range(50):
            cw, ch = random.uniform(0.3 * w, w), random.uniform(0.3 * h, h)
            if ch / cw < 0.5 or ch / cw > 2:
                continue
            left, top = random.uniform(0, w - cw), random.uniform(0, h - ch)
            rect = torch.tensor([int(left), int(top), int(left + cw), int(top + ch)], dtype=torch.float32)
            keep, keep_crowd = _centres_inside(boxes, rect), _centres_inside(crowd, rect)
            if not keep.any():
                continue
            x0, y0, x1, y1 = (int(v) for v in rect)
            out = dict(target)
            out["boxes"] = _clip_shift(boxes[keep], rect)
            out["labels"] = target["labels"][keep]
            if "masks" in target:
                out["masks"] = target["masks"][keep][:, y0:y1, x0:x1]
            if "crowd_boxes" in target:
                out["crowd_boxes"] = _clip_shift(crowd[keep_crowd], rect)
            return image[:, y0:y1, x0:x1], out


def _centres_inside(boxes: Tensor, rect: Tensor) -> Tensor:
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    return (rect[0] < c[:, 0]) & (rect[1] < c[:, 1]) & (rect[2] > c[:, 0]) & (rect[3] > c[:, 1])


def _clip_shift(boxes: Tensor, rect: Tensor) -> Tensor:
    out = boxes.clone()
    out[:, :2] = torch.maximum(out[:, :2], rect[:2]) - rect[:2]
    out[:, 2:] = torch.minimum(out[:, 2:], rect[2:]) - rect[:2]
    return out


def mirror(image: Tensor, target: dict) -> tuple:
    """Horizontal flip with p .5 (x1' = W - x2, x2' = W - x1)."""
    if random.random() < 0.5:
        return image, target
    w = image.shape[-1]
    target = dict(target)
    for key in ("boxes", "crowd_boxes"):
        if key in target:
            b = target[key]
            target[key] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
    for key in ("masks", "sem_seg"):
        if key in target:
            target[key] = target[key].flip(-1)
    return image.flip(-1), target


def resize_square(image: Tensor, target: dict, size: int) -> tuple:
    """Squash to size x size (no aspect ratio): bilinear without antialiasing as the official FastBaseTransform,
    masks nearest, boxes scaled per axis."""
    _, h, w = image.shape
    if (h, w) != (size, size):
        image = F.interpolate(image[None].float(), (size, size), mode="bilinear", align_corners=False)[0]
    target = dict(target)
    scale = torch.tensor([size / w, size / h, size / w, size / h])
    for key in ("boxes", "crowd_boxes"):
        if key in target:
            target[key] = target[key] * scale
    for key in ("masks", "sem_seg"):
        if key in target and target[key].shape[-2:] != (size, size):
            m = target[key]
            m = F.interpolate(m.reshape(-1, 1, h, w).float(), (size, size), mode="nearest")
            target[key] = m.reshape(*target[key].shape[:-2], size, size).to(target[key].dtype)
    return image, target


class SSDAugmentation:
    """photometric distort -> expand -> random sample crop -> mirror (the official order)."""

    def __init__(self, fill: tuple[float, float, float]) -> None:
        self.fill = fill

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        image = photometric_distort(image)
        image, target = expand(image, target, self.fill)
        image, target = random_sample_crop(image, target)
        return mirror(image, target)


class SquareResize:
    """The YOLACT input: squash to ``size`` x ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        return resize_square(image, target, self.size)


class Mirror:
    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        return mirror(image, target)
