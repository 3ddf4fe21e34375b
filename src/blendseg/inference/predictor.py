"""The one inference path behind the Python API, ``blendseg predict`` and the demo: test-time resize, the network,
postprocess with the score threshold and ``max_det`` applied before any mask pixel is made, and timings."""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..data.transforms import transforms_for
from ..structures import pad_images, to_device
from .precision import autocast, to_float32, warn_if_slow_on_cpu
from .result import Categories, Result
from .slicing import SliceSpec, as_spec, needs_slicing, sliced_result


def resize_for_test(cfg: TrainConfig, image: Tensor, transform=None) -> Tensor:
    """(3, H, W) image resized as the config's test pipeline does (``transform``: that pipeline, when built)."""
    transform = transform or transforms_for(cfg.data, train=False)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    return transform(image, empty)[0]


def model_device(model: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); the CPU for a module with neither."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


class Predictor:
    """``predictor(image, path=None) -> Result`` for one (3, H, W) uint8 RGB image.

    Args:
        model: a blendseg model (any method) in eval mode.
        cfg: its run config (the test-time resize).
        categories: class names and dataset ids.
        conf: keep detections scoring at least this.
        max_det: keep at most this many (highest scores).
        device: where the network runs; None: where the model is (a device moves the model there).
        precision: "fp32", "bf16" (CPU or CUDA) or "fp16" (CUDA): the network under autocast, decoding and masks
            in float32 (:mod:`~blendseg.inference.precision`).
        slice: a tile size or :class:`~blendseg.inference.slicing.SliceSpec`: images larger than a tile are
            predicted tile by tile (batched) and merged by masks (:mod:`~blendseg.inference.slicing`).

    The Result holds its detections on the CPU (compact masks and panoptic maps included), so keeping many of them
    costs no GPU memory.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        categories: Categories,
        conf: float = 0.3,
        max_det: int = 100,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        slice: int | SliceSpec | None = None,
    ) -> None:
        self.slice = as_spec(slice)
        panoptic = getattr(cfg.model, "panoptic", None)
        if self.slice is not None and panoptic is not None and panoptic.enabled:
            raise ValueError("slice: a panoptic model predicts the whole image (its stuff has no tiles to merge by)")
        self.device = model_device(model) if device is None else torch.device(device)
        autocast(precision, self.device)  # validates the name for this device
        warn_if_slow_on_cpu(precision, self.device, f"precision {precision}")
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.cfg, self.categories, self.conf, self.max_det = cfg, categories, conf, max_det
        self.transform = transforms_for(cfg.data, train=False)

    def detect(self, image: Tensor) -> tuple[object, dict[str, float]]:
        """Detections of all scores at the image's size, and the timings (ms) of the three stages."""
        dets, speed = self._detect([image])
        return dets[0], speed

    def detect_tiles(self, tiles: list[Tensor]) -> list:
        """Detections of all scores for several images (tiles) in one network call, each at its own size."""
        return self._detect(tiles)[0]

    @torch.inference_mode()
    def _detect(self, images: list[Tensor]) -> tuple[list, dict[str, float]]:
        t0 = time.perf_counter()
        resized = [resize_for_test(self.cfg, im, self.transform) for im in images]
        batch = pad_images(resized, self.cfg.model.size_divisibility).to(self.device)  # uint8 to the device
        t1 = self._clock()
        with autocast(self.precision, self.device):
            out = self.model(batch)
        out = to_float32(out)
        t2 = self._clock()
        dets = self.model.postprocess(out, [tuple(im.shape[-2:]) for im in images])
        t3 = self._clock()
        return dets, {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3, "postprocess": (t3 - t2) * 1e3}

    def _clock(self) -> float:
        """perf_counter once the device's queued work is done (CUDA runs asynchronously: without the wait a stage
        would time its kernel launches)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def __call__(self, image: Tensor, path: str | None = None, frame: int | None = None) -> Result:
        if needs_slicing(image, self.slice):
            return sliced_result(self, self.detect_tiles, image, path, frame)
        dets, speed = self.detect(image)
        t0 = time.perf_counter()
        keep = (dets.scores >= self.conf).nonzero()[:, 0]
        keep = keep[dets.scores[keep].argsort(descending=True)[: self.max_det]]
        dets = to_device(dets[keep], "cpu")  # masks are still compact: nothing was pasted for what is dropped here
        speed["postprocess"] += (time.perf_counter() - t0) * 1e3
        return Result(image, dets, self.categories, path, speed, frame)
