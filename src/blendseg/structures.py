"""Containers shared by data loading and models: the padded image batch, compact instance masks, panoptic
results.

Conventions: images are float32 RGB in 0..255, (3, H, W); boxes are xyxy absolute pixels of the image the
model sees; labels are contiguous 0..num_classes-1. Targets are dicts with ``boxes`` (M, 4) float32 and
``labels`` (M,) int64, plus ``masks`` (M, H, W) uint8 when a method needs them. Predicted masks stay compact
(:class:`BoxMasks`, :class:`GridMasks`): full-image pixels are made per instance, when asked for.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .ops.masks import mask_extent, paste_window, paste_windows, upsample_window, upsample_windows


@dataclass
class ImageBatch:
    """Padded images and their true sizes.

    Attributes:
        tensor: (N, 3, Hp, Wp) float32 RGB 0..255, zero padded at the bottom / right.
        image_sizes: per image (h, w) before padding.
    """

    tensor: Tensor
    image_sizes: list[tuple[int, int]]

    def to(self, device: torch.device | str, memory_format: torch.memory_format = torch.preserve_format) -> ImageBatch:
        return ImageBatch(self.tensor.to(device, non_blocking=True, memory_format=memory_format), self.image_sizes)

    def pin_memory(self) -> ImageBatch:
        """A copy in page-locked memory (what a ``DataLoader(pin_memory=True)`` calls), so :meth:`to` a GPU is
        asynchronous."""
        return ImageBatch(self.tensor.pin_memory(), self.image_sizes)

    def __len__(self) -> int:
        return self.tensor.shape[0]


def pad_images(images: list[Tensor], size_divisibility: int = 32) -> ImageBatch:
    """Stack (3, h, w) images into one zero-padded (N, 3, Hp, Wp) batch, Hp and Wp multiples of the divisor: uint8
    when every image is (a quarter of float32's bytes through the loader's shared memory and to the device, which
    normalises it, :func:`normalize_batch`), float32 otherwise."""
    if not images:
        raise ValueError("pad_images needs at least one image")
    sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
    div = max(size_divisibility, 1)
    hp = int(math.ceil(max(h for h, _ in sizes) / div) * div)
    wp = int(math.ceil(max(w for _, w in sizes) / div) * div)
    dtype = torch.uint8 if all(im.dtype == torch.uint8 for im in images) else torch.float32
    batch = images[0].new_zeros((len(images), images[0].shape[0], hp, wp), dtype=dtype)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[-2], : im.shape[-1]] = im
    return ImageBatch(batch, sizes)


def normalize_batch(batch: ImageBatch, mean: Tensor, std: Tensor, bgr: bool) -> Tensor:
    """(x - mean) / std in the channel order of the weights, with the padding set to exactly 0 afterwards.

    Zero padding *after* normalisation is what detectron2 does, so padded pixels carry no signal.
    """
    x = batch.tensor.float()  # uint8 batches become float here, on the device
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
    return [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


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


@dataclass
class Instances:
    """One image's instances in its pixels: boxes (D, 4) xyxy, scores (D,), labels (D,) contiguous ids and masks
    (compact, or None): what an exported graph and sliced prediction give, behind the same interface as the
    models' detections (indexing with a tensor, ``len``)."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    masks: LazyMasks | None = None

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def __getitem__(self, idx) -> Instances:
        masks = None if self.masks is None else self.masks[idx]
        return Instances(self.boxes[idx], self.scores[idx], self.labels[idx], masks)


class LazyMasks:
    """(D, H, W) bool instance masks kept compact: an instance's full-image pixels are made when indexed with an
    int (``masks[i]``), all of them by :meth:`to_tensor`; :meth:`window` gives the only area an instance can cover.
    Indexing with a tensor, list or slice keeps the compact form. ``shape`` and ``dtype`` read as the dense
    tensor's would, so memory follows the instances looked at, not D x H x W. Subclasses hold ``probs`` (D, ...)."""

    probs: Tensor
    image_size: tuple[int, int]

    def window(self, i: int) -> tuple[int, int, Tensor]:
        """(y0, x0, (h, w) bool): instance ``i``'s pixels inside the window at (y0, x0); zero elsewhere."""
        raise NotImplementedError

    def windows(self) -> list[tuple[int, int, Tensor]]:
        """:meth:`window` of every instance (subclasses make them together where that is cheaper)."""
        return [self.window(i) for i in range(len(self))]

    def _select(self, idx) -> LazyMasks:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.probs.shape[0]

    @property
    def device(self) -> torch.device:
        return self.probs.device

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self), *self.image_size)

    @property
    def dtype(self) -> torch.dtype:
        return torch.bool

    def __getitem__(self, idx):
        if isinstance(idx, int) or (torch.is_tensor(idx) and idx.ndim == 0 and idx.dtype != torch.bool):
            i = int(idx)
            if not -len(self) <= i < len(self):
                raise IndexError(f"mask {i} of {len(self)}")
            y0, x0, win = self.window(i % len(self))
            out = torch.zeros(self.image_size, dtype=torch.bool, device=win.device)
            out[y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]] = win
            return out
        return self._select(idx)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def map_tensors(self, fn: Callable[[Tensor], Tensor]) -> LazyMasks:
        """A copy with ``fn`` applied to every tensor it holds (e.g. ``lambda t: t.cpu()``)."""
        out = copy.copy(self)
        for k, v in vars(self).items():
            if torch.is_tensor(v):
                setattr(out, k, fn(v))
        return out

    def to_tensor(self) -> Tensor:
        """(D, H, W) bool: every instance at full size (D x H x W bytes)."""
        out = torch.zeros(self.shape, dtype=torch.bool, device=self.device)
        for i, (y0, x0, win) in enumerate(self.windows()):
            out[i, y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]] = win
        return out


class BoxMasks(LazyMasks):
    """Masks as (D, S, S) probabilities in their paste boxes (D, 4) xyxy pixels of an image of ``image_size``
    (BlendMask, MEInst): instance i is detectron2's paste of ``probs[i]`` into ``boxes[i]``, ``>= threshold``."""

    def __init__(self, probs: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float = 0.5) -> None:
        self.probs, self.boxes = probs, boxes
        self.image_size, self.threshold = (int(image_size[0]), int(image_size[1])), threshold

    def window(self, i: int) -> tuple[int, int, Tensor]:
        return paste_window(self.probs[i], self.boxes[i], self.image_size, self.threshold)

    def windows(self) -> list[tuple[int, int, Tensor]]:
        return paste_windows(self.probs, self.boxes, self.image_size, self.threshold)

    def _select(self, idx) -> BoxMasks:
        return BoxMasks(self.probs[idx], self.boxes[idx], self.image_size, self.threshold)


class GridMasks(LazyMasks):
    """Masks as low-resolution (D, h, w) probabilities over an image grid (YOLACT's cropped prototypes): instance i
    is ``F.interpolate(probs[i], full_size, bilinear)`` cut to the top-left ``image_size``, ``> threshold``."""

    SMALL = 384 * 384  # full-size pixels up to which to_tensor upsamples whole masks

    def __init__(
        self, probs: Tensor, full_size: tuple[int, int], image_size: tuple[int, int], threshold: float = 0.5
    ) -> None:
        self.probs, self.full_size = probs, (int(full_size[0]), int(full_size[1]))
        self.image_size, self.threshold = (int(image_size[0]), int(image_size[1])), threshold

    def window(self, i: int) -> tuple[int, int, Tensor]:
        return upsample_window(self.probs[i], self.full_size, self.image_size, self.threshold)

    def windows(self) -> list[tuple[int, int, Tensor]]:
        return upsample_windows(self.probs, self.full_size, self.image_size, self.threshold)

    def _select(self, idx) -> GridMasks:
        return GridMasks(self.probs[idx], self.full_size, self.image_size, self.threshold)

    def to_tensor(self, chunk: int = 16) -> Tensor:
        """(D, H, W) bool, every instance at once. Up to ``SMALL`` full-size pixels the definition's
        ``F.interpolate`` on ``chunk`` instances at a time (the float copies stay ``chunk`` images large); larger,
        each instance's window only (:meth:`windows`). The same pixels either way; the switch is where the windows
        start to pay on this project's CPU (100 masks at 256 px: 5.5 ms whole, 7.4 windows; at 640 x 480: 49-56 ms
        whole, 10-31 windows)."""
        if self.full_size[0] * self.full_size[1] > self.SMALL:
            return super().to_tensor()
        h, w = self.image_size
        out = torch.empty(self.shape, dtype=torch.bool, device=self.device)
        for s in range(0, len(self), chunk):
            up = F.interpolate(self.probs[s : s + chunk, None].float(), self.full_size, mode="bilinear")
            out[s : s + chunk] = up[:, 0, :h, :w] > self.threshold
        return out


class DenseMasks(LazyMasks):
    """Masks already at full size (D, H, W) (an exported graph's output), behind the same interface; an instance's
    window is its mask's bounding box."""

    def __init__(self, masks: Tensor) -> None:
        self.probs, self.image_size = masks, (int(masks.shape[-2]), int(masks.shape[-1]))

    def window(self, i: int) -> tuple[int, int, Tensor]:
        m = self.probs[i].bool()
        extent = mask_extent(m)
        if extent is None:
            return 0, 0, m[:0, :0]
        y0, x0, y1, x1 = extent
        return y0, x0, m[y0:y1, x0:x1]

    def _select(self, idx) -> DenseMasks:
        return DenseMasks(self.probs[idx])

    def to_tensor(self) -> Tensor:
        return self.probs.bool()


class WindowMasks(LazyMasks):
    """Masks as each instance's pixels inside its own window, at any place in the image: what sliced prediction
    merges its tiles into. ``probs`` (D, 4) holds the windows' (y0, x0, h, w); ``pixels`` every window's pixels,
    one after another (row-major); memory follows the instances' windows, not the image."""

    def __init__(self, windows: list[tuple[int, int, Tensor]], image_size: tuple[int, int]) -> None:
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.probs = torch.tensor([[y0, x0, *w.shape] for y0, x0, w in windows], dtype=torch.int64).reshape(-1, 4)
        flat = [w.reshape(-1).bool() for _, _, w in windows]
        self.pixels = torch.cat(flat) if flat else torch.zeros(0, dtype=torch.bool)
        self.offsets = torch.tensor([0, *(len(f) for f in flat)], dtype=torch.int64).cumsum(0)

    def window(self, i: int) -> tuple[int, int, Tensor]:
        y0, x0, h, w = (int(v) for v in self.probs[i])
        return y0, x0, self.pixels[int(self.offsets[i]) : int(self.offsets[i + 1])].view(h, w)

    def _select(self, idx) -> WindowMasks:
        picked = torch.arange(len(self))[idx].reshape(-1)
        return WindowMasks([self.window(int(i)) for i in picked], self.image_size)


def map_tensors(obj, fn: Callable[[Tensor], Tensor]):
    """``obj`` with ``fn`` applied to every tensor inside it: dataclass fields (detections, panoptic results, model
    outputs), compact masks, lists, tuples and dicts; what holds no tensor comes back as it is."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, LazyMasks):
        return obj.map_tensors(fn)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj)}
        return dataclasses.replace(obj, **{k: v for k, v in changes.items() if v is not getattr(obj, k)})
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def to_device(obj, device: torch.device | str):
    """``obj`` (detections, a model output, ...) with every tensor inside on ``device``."""
    return map_tensors(obj, lambda t: t.to(device))
