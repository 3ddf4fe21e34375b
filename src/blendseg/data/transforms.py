"""Joint image + target transforms on torchvision.transforms.v2 / tv_tensors: resize shortest edge, flip."""

from __future__ import annotations

import random

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

# per-pixel label maps that move with the image (nearest resize, flips): instance masks, BlendMask's "thing" map and
# panoptic BlendMask's semantic target
DENSE_KEYS = ("masks", "sem_seg", "panoptic_sem")


def shortest_edge_size(h: int, w: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge output (h, w): short side -> ``short``, long side capped at ``max_size``."""
    scale = short / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max(newh, neww) > max_size:
        s = max_size / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)


class ResizeShortestEdge:
    """Resize so the short side is one of ``short_sides`` ("choice") or uniform in [a, b] ("range")."""

    def __init__(self, short_sides: tuple[int, ...], max_size: int, sampling: str = "choice") -> None:
        if sampling not in ("choice", "range"):
            raise ValueError(f"sampling must be 'choice' or 'range', got {sampling!r}")
        if sampling == "range" and len(short_sides) != 2:
            raise ValueError(f"'range' sampling needs two sizes, got {short_sides}")
        self.short_sides, self.max_size, self.sampling = tuple(short_sides), max_size, sampling

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        if self.sampling == "choice":
            short = random.choice(self.short_sides)
        else:
            short = random.randint(self.short_sides[0], self.short_sides[1])
        h, w = image.shape[-2:]
        size = shortest_edge_size(h, w, short, self.max_size)
        if size == (h, w):
            return image, target
        image = TF.resize(image, list(size), antialias=True)
        target = dict(target)
        for key in ("boxes", "crowd_boxes"):
            if key in target:
                target[key] = TF.resize(target[key], list(size))
        for key in DENSE_KEYS:
            if key in target:
                target[key] = TF.resize(target[key], list(size), interpolation=v2.InterpolationMode.NEAREST)
        if "polygons" in target:  # detectron2 ResizeTransform.apply_coords
            sx, sy = size[1] / w, size[0] / h
            target["polygons"] = [_scale_rings(rings, sx, sy) for rings in target["polygons"]]
        return image, target


class ToTvTensors:
    """Wrap a plain (image, target) pair in tv_tensors so v2 transforms move boxes and masks with the image."""

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        h, w = image.shape[-2:]
        target = dict(target)
        for key in ("boxes", "crowd_boxes"):
            if key in target:
                target[key] = tv_tensors.BoundingBoxes(target[key], format="XYXY", canvas_size=(h, w))
        for key in DENSE_KEYS:
            if key in target:
                target[key] = tv_tensors.Mask(target[key])
        return tv_tensors.Image(image), target


class FilterEmpty:
    """Clip boxes to the image and drop instances whose box became empty (detectron2 filter_empty_instances)."""

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        h, w = image.shape[-2:]
        boxes = torch.as_tensor(target["boxes"]).clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        keep = ((boxes[:, 2] - boxes[:, 0]) > 1e-5) & ((boxes[:, 3] - boxes[:, 1]) > 1e-5)
        target = dict(target)
        target["boxes"] = boxes[keep].as_subclass(torch.Tensor)
        target["labels"] = target["labels"][keep]
        if "masks" in target:
            target["masks"] = target["masks"][keep].as_subclass(torch.Tensor)
        if "polygons" in target:
            target["polygons"] = [p for p, k in zip(target["polygons"], keep.tolist()) if k]
        for key in ("sem_seg", "panoptic_sem", "crowd_boxes"):
            if key in target:
                target[key] = target[key].as_subclass(torch.Tensor)
        return image.as_subclass(torch.Tensor), target


class Compose:
    def __init__(self, transforms: list) -> None:
        self.transforms = transforms

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class HFlip:
    """Horizontal flip with probability ``p`` (v2 over the image and the tv_tensors; polygons x -> w - x)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p
        self.flip = v2.RandomHorizontalFlip(1.0)

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        if random.random() >= self.p:
            return image, target
        polygons = target.get("polygons")
        image, target = self.flip(image, {k: v for k, v in target.items() if k != "polygons"})
        if polygons is not None:
            w = image.shape[-1]
            target["polygons"] = [_flip_rings(rings, w) for rings in polygons]
        return image, target


def _scale_rings(rings, sx: float, sy: float):
    if rings is None:
        return None
    out = []
    for r in rings:
        r = r.copy()
        r[0::2] *= sx
        r[1::2] *= sy
        out.append(r)
    return out


def _flip_rings(rings, w: int):
    if rings is None:
        return None
    out = []
    for r in rings:
        r = r.copy()
        r[0::2] = w - r[0::2]
        out.append(r)
    return out


def build_transforms(
    train: bool,
    min_size_train: tuple[int, ...],
    min_size_train_sampling: str,
    max_size_train: int,
    min_size_test: int,
    max_size_test: int,
    hflip: bool,
) -> Compose:
    """The reference pipeline: shortest-edge resize (+ flip in training), then clip / filter boxes."""
    if train:
        ts = [ToTvTensors(), ResizeShortestEdge(min_size_train, max_size_train, min_size_train_sampling)]
        if hflip:
            ts.append(HFlip(0.5))
    else:
        ts = [ToTvTensors(), ResizeShortestEdge((min_size_test,), max_size_test)]
    return Compose([*ts, FilterEmpty()])


def transforms_for(d, train: bool, fill: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Compose:
    """The pipeline a :class:`~blendseg.config.DataConfig` names: shortest-edge resize (+ flip), or with
    ``square_size`` the YOLACT squash, after the official SSD augmentation (``augment="ssd"``, canvas ``fill``) or a
    mirror only (``augment="flip"``) in training."""
    if d.augment not in ("flip", "ssd"):
        raise ValueError(f"data.augment must be 'flip' or 'ssd', got {d.augment!r}")
    if d.square_size <= 0:
        if d.augment == "ssd":
            raise ValueError("data.augment='ssd' needs data.square_size > 0 (the YOLACT input)")
        return build_transforms(
            train,
            d.min_size_train,
            d.min_size_train_sampling,
            d.max_size_train,
            d.min_size_test,
            d.max_size_test,
            d.hflip_train,
        )
    from .ssd_augment import Mirror, SquareResize, SSDAugmentation

    ts: list = []
    if train and d.augment == "ssd":
        ts.append(SSDAugmentation(fill))
    elif train and d.hflip_train:
        ts.append(Mirror())
    return Compose([*ts, SquareResize(d.square_size), FilterEmpty()])
