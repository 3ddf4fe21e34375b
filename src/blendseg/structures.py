"""Batch container shared by data loading and models.

Conventions: images are float32 RGB in 0..255, (3, H, W); boxes are xyxy absolute pixels of the image the
model sees; labels are contiguous 0..num_classes-1. Targets are dicts with ``boxes`` (M, 4) float32 and
``labels`` (M,) int64, plus ``masks`` (M, H, W) uint8 when a method needs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class ImageBatch:
    """Padded images and their true sizes.

    Attributes:
        tensor: (N, 3, Hp, Wp) float32 RGB 0..255, zero padded at the bottom / right.
        image_sizes: per image (h, w) before padding.
    """

    tensor: Tensor
    image_sizes: list[tuple[int, int]]

    def to(self, device: torch.device | str) -> ImageBatch:
        return ImageBatch(self.tensor.to(device, non_blocking=True), self.image_sizes)

    def __len__(self) -> int:
        return self.tensor.shape[0]


def pad_images(images: list[Tensor], size_divisibility: int = 32) -> ImageBatch:
    """Stack (3, h, w) images into one zero-padded (N, 3, Hp, Wp) batch, Hp and Wp multiples of the divisor."""
    if not images:
        raise ValueError("pad_images needs at least one image")
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    div = max(size_divisibility, 1)
    hp = int(math.ceil(max(h for h, _ in sizes) / div) * div)
    wp = int(math.ceil(max(w for _, w in sizes) / div) * div)
    batch = images[0].new_zeros((len(images), images[0].shape[0], hp, wp), dtype=torch.float32)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[-2], : im.shape[-1]] = im
    return ImageBatch(batch, sizes)


def normalize_batch(batch: ImageBatch, mean: Tensor, std: Tensor, bgr: bool) -> Tensor:
    """(x - mean) / std in the channel order of the weights, with the padding set to exactly 0 afterwards.

    Zero padding *after* normalisation is what detectron2 does, so padded pixels carry no signal.
    """
    x = batch.tensor
    if bgr:
        x = x.flip(1)
    x = (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    hp, wp = x.shape[-2:]
    if any(h != hp or w != wp for h, w in batch.image_sizes):
        valid = torch.zeros((x.shape[0], 1, hp, wp), dtype=torch.bool, device=x.device)
        for i, (h, w) in enumerate(batch.image_sizes):
            valid[i, :, :h, :w] = True
        x = x * valid
    return x


def targets_to(targets: list[dict], device: torch.device | str) -> list[dict]:
    """Targets with every tensor moved to ``device`` (non-tensor entries such as ``polygons`` kept as they are)."""
    return [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


@dataclass
class PanopticResult:
    """One image's panoptic segmentation (detectron2's ``panoptic_seg`` output).

    Attributes:
        panoptic_seg: (H, W) int32 segment ids, 0 = void.
        segments_info: per segment ``id``, ``isthing``, ``category_id`` (a thing's contiguous label, or a stuff
            class 1..S of the semantic branch), ``score`` and ``instance_id`` (index into the image's detections as
            ``postprocess`` returned them) for things, ``area`` for stuff.
        semantic: (H, W) int32 argmax of the semantic branch (0 = things, 1..S = stuff).
    """

    panoptic_seg: Tensor
    segments_info: list[dict]
    semantic: Tensor
