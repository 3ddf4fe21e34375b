"""A per-GPU memory estimate printed before training: measured, not guessed.

Activations depend on the method, the input size and the instance count, so the estimate runs the model: one
forward and backward on 1 and then 2 images of the largest training input (the longest short side at the
maximum aspect ratio, or the square of a squashing preset) with ``INSTANCES`` instances each, reads the peak
memory of each, and extrapolates the line through them to the micro-batch, adding the optimiser's state (SGD's
momentum: one copy of the trainable weights; AdamW: two). ultralytics' AutoBatch fits the same kind of line to
choose a batch; here the batch is the recipe's, and when it does not fit the estimate says which
``solver.accumulate`` would (gradient accumulation keeps the step's batch and learning rate; its loss normalisers
are per micro-batch).

The model's buffers, gradients and the random generators are left as they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..config import TrainConfig
from ..structures import ImageBatch

GiB = 1024**3
INSTANCES = 20  # per probe image: about COCO's busiest-quartile images (7.3 a COCO image on average)
FITS = 0.9  # of the device's memory: the allocator's fragmentation and the CUDA context need the rest


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes: ``fixed`` (weights, gradients, workspace), ``per_image`` (activations of one image), ``optimizer``
    (its state), ``total`` (the device's memory); ``size`` the probe's (H, W)."""

    fixed: float
    per_image: float
    optimizer: float
    total: float
    size: tuple[int, int]

    def peak(self, images: int) -> float:
        return self.fixed + self.per_image * images + self.optimizer

    def smallest_accumulation(self, share: int) -> int | None:
        """The fewest micro-batches (a divisor of ``share``) whose peak fits; None when one image does not."""
        for k in range(1, share + 1):
            if share % k == 0 and self.peak(share // k) <= FITS * self.total:
                return k
        return None

    def message(self, share: int, accumulate: int) -> str:
        micro = share // accumulate
        h, w = self.size
        line = (
            f"memory per GPU: about {self.peak(micro) / GiB:.1f} GiB of {self.total / GiB:.1f} GiB for {micro} "
            f"image(s) of {h}x{w} at once ({self.fixed / GiB:.2f} GiB + {self.per_image / GiB:.2f} GiB an image, "
            f"measured at 1 and 2 with {INSTANCES} instances each; optimiser state {self.optimizer / GiB:.2f} GiB)"
        )
        if self.peak(micro) <= FITS * self.total:
            return line
        k = self.smallest_accumulation(share)
        if k is None:
            return line + f"\nwarning: even one image of {h}x{w} may not fit this GPU: lower data.max_size_train"
        return line + (
            f"\nwarning: {micro} image(s) at once may not fit this GPU; solver.accumulate={k} would put "
            f"{share // k} through at a time (the step's batch and learning rate unchanged)"
        )


def probe_size(cfg: TrainConfig) -> tuple[int, int]:
    """(H, W) of the largest training input: the square of a squashing preset, else the longest short side at the
    longest allowed long side (landscape), rounded up to the size divisibility."""
    d = cfg.data
    if d.square_size > 0:
        return d.square_size, d.square_size
    short, long = max(d.min_size_train), d.max_size_train
    div = max(cfg.model.size_divisibility, 1)
    up = lambda x: -(-x // div) * div  # noqa: E731
    return up(min(short, long)), up(long)


def probe_targets(n: int, size: tuple[int, int], device: torch.device) -> list[dict]:
    """``n`` images' targets of ``INSTANCES`` boxes with filled masks, in a grid over the image."""
    h, w = size
    side = int(INSTANCES**0.5 + 0.999)
    out = []
    for _ in range(n):
        boxes, masks = [], torch.zeros(INSTANCES, h, w, dtype=torch.uint8, device=device)
        for i in range(INSTANCES):
            y, x = divmod(i, side)
            box = (x * w / side + 2, y * h / side + 2, (x + 1) * w / side - 2, (y + 1) * h / side - 2)
            masks[i, int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = 1
            boxes.append(box)
        labels = torch.zeros(INSTANCES, dtype=torch.int64, device=device)
        out.append({"boxes": torch.tensor(boxes, device=device), "labels": labels, "masks": masks})
    return out


def estimate_memory(
    model: nn.Module,
    cfg: TrainConfig,
    device: torch.device,
    autocast: Callable = contextlib.nullcontext,
    peak: Callable[[Callable[[], None]], float] | None = None,
) -> MemoryEstimate | None:
    """The estimate for ``model`` (on ``device``, in training mode) under ``cfg``, its forward in ``autocast()``
    (the training's); None off CUDA (``peak``: the peak bytes of running a function, CUDA's allocator statistics by
    default; given, it runs anywhere)."""
    if peak is None:
        if device.type != "cuda":
            return None
        peak = _cuda_peak(device)
    size = probe_size(cfg)
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    fmt = torch.channels_last if cfg.solver.channels_last else torch.preserve_format

    def step(n: int) -> Callable[[], None]:
        def run() -> None:
            images = ImageBatch(torch.zeros(n, 3, *size, dtype=torch.uint8, device=device), [size] * n)
            with autocast():
                losses = model(images.to(device, memory_format=fmt), probe_targets(n, size, device)).losses
            sum(losses.values()).backward()

        return run

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            one, two = peak(step(1)), peak(step(2))
        finally:
            model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for k, b in model.named_buffers():
                    b.copy_(buffers[k])
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    total = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else float("inf")
    inf = float("inf")  # a probe that ran out of memory
    if one == inf:
        fixed, per_image = inf, 0.0
    elif two == inf:  # one image's peak taken as all activations: an upper bound per image
        fixed, per_image = 0.0, one
    else:
        per_image = max(two - one, 0.0)
        fixed = one - per_image
    return MemoryEstimate(fixed, per_image, trainable * (2 if cfg.solver.optimizer == "adamw" else 1), total, size)


def _cuda_peak(device: torch.device) -> Callable[[Callable[[], None]], float]:
    def peak(fn: Callable[[], None]) -> float:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        try:
            fn()
        except torch.cuda.OutOfMemoryError:
            return float("inf")
        torch.cuda.synchronize(device)
        return float(torch.cuda.max_memory_allocated(device))

    return peak
