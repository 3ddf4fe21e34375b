"""Helpers the benchmarks share: a synthetic photo, the median of timed calls, a random-weights checkpoint whose
every image yields the full 100 detections (the worst case for masks), and the results file with its command."""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def photo(path: Path, w: int, h: int, seed: int = 0) -> Path:
    """A JPEG of w x h: smooth colour field with large ellipses (content the models respond to)."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (max(h // 50, 2), max(w // 50, 2), 3), dtype=np.uint8))
    img = img.resize((w, h), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(60):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.01, 0.1) * max(w, h)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    img.save(path, quality=90)
    return path


def median_ms(fn, runs: int, warmup: bool = True) -> float:
    """Median wall time of ``runs`` calls of ``fn`` in milliseconds (after one unmeasured call with ``warmup``)."""
    if warmup:
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def checkpoint(preset: str, path: Path, legacy: bool = False, full: bool = False) -> Path:
    """Random weights of ``preset`` whose class scores clear any threshold (100 detections per image); ``legacy``:
    without the config keys versions before panoptic BlendMask do not know. ``full``: also FCOS boxes 4 strides wide
    (random box regression is ~0: empty boxes, dropped) and one dominant YOLACT class (spread over 80 COCO classes
    no score clears 0.05), so that the R-50 COCO presets keep 100 detections too."""
    from blendseg.engine.checkpoint import save_checkpoint
    from blendseg.overrides import to_dict
    from blendseg.zoo import build_model, get_preset

    torch.manual_seed(0)
    cfg = get_preset(preset)
    no_download = dataclasses.replace(cfg.model.backbone, weights="")  # random weights: no ImageNet download
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=no_download))
    model = build_model(cfg.model)
    if hasattr(model, "fcos"):
        torch.nn.init.constant_(model.fcos.head.cls_logits.bias, 3.0)
        if full:
            torch.nn.init.constant_(model.fcos.head.bbox_pred.bias, 2.0)
    else:  # YOLACT: background logit low, foreground high
        bias = model.prediction_layers[0].conf_layer.bias.detach().view(-1, cfg.model.yolact.num_classes + 1)
        bias[:, 0], bias[:, 1:] = -5.0, 3.0
        if full:
            bias[:, 2:] = -5.0
    config = to_dict(cfg)
    if legacy:
        config["model"].pop("panoptic", None)
        config["data"].pop("with_panoptic", None)
    save_checkpoint(path, {"model": model.state_dict(), "config": config, "iteration": 0})
    return path


def write_markdown(path: Path, md: list[str], env: str = "") -> None:
    """The lines ``md`` into ``path``, closed by the command that made them (``python -m benchmarks.NAME`` and this
    run's arguments; ``env``: what must stand before it, e.g. a PYTHONPATH), and printed."""
    cmd = f"{env}python -m benchmarks.{Path(sys.argv[0]).stem} " + " ".join(sys.argv[1:])
    path.write_text("\n".join(md) + f"\n\nCommand: `{cmd}`\n")
    print("\n".join(md))
