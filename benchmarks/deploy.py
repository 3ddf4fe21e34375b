"""Latency of every deployment path of a preset, side by side in one process (issue 22):

    python benchmarks/deploy.py --presets blendmask_r50_1x --size 1216x800 [--runs 5] [--threads 2]

PyTorch's predictor in fp32, fused (``Model.fuse``) and bf16; onnxruntime on the fp32 export and on its int8 form
(``export --int8``, calibrated on ``--calib`` images). Each preset gets random weights with its FCOS class bias
raised so every image yields the full ``max_det`` detections (the worst case for masks); the image is a synthetic
scene at ``--size``. Medians of ``--runs`` calls after one warm-up each; threads pinned for all. Prints a markdown
table (ms and speed-up over PyTorch fp32).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import blendseg
from blendseg.config import to_dict
from blendseg.engine.checkpoint import save_checkpoint
from blendseg.export.quantize import quantize_int8
from blendseg.inference.onnx_runtime import OnnxPredictor
from blendseg.zoo import build_model, get_preset


def scene(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A (3, H, W) uint8 picture of coloured discs and boxes on a gradient (not noise: real-looking statistics)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    img = np.stack([xx / width * 180, yy / height * 160, np.full_like(xx, 90.0)], -1)
    for _ in range(20):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 150)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return torch.from_numpy(img.clip(0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous()


def checkpoint(preset: str, path: Path) -> Path:
    torch.manual_seed(0)
    cfg = get_preset(preset)
    model = build_model(cfg.model)
    head = getattr(getattr(model, "fcos", model), "head", None)
    if hasattr(head, "cls_logits"):
        torch.nn.init.constant_(head.cls_logits.bias, 2.0)
    names = [f"class{i}" for i in range(80)]
    return save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(cfg), "iteration": 0,
                                  "class_names": names})  # fmt: skip


def median_ms(fn, image, runs: int) -> float:
    fn(image)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(image)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure(
    preset: str, image: torch.Tensor, out: Path, runs: int, calib: int, max_det: int, threads: int
) -> dict[str, float]:
    ckpt = checkpoint(preset, out / f"{preset}.pt")
    rows: dict[str, float] = {}
    model = blendseg.load(ckpt, "cpu")
    rows["PyTorch fp32"] = median_ms(model.predictor(0.05, max_det), image, runs)
    rows["PyTorch bf16"] = median_ms(model.predictor(0.05, max_det, precision="bf16"), image, runs)
    fp32 = model.export(out=out / f"{preset}.onnx", conf=0.05, max_det=max_det)
    rows["onnxruntime fp32"] = median_ms(OnnxPredictor(fp32, 0.05, max_det, threads=threads), image, runs)
    images = [scene(image.shape[2], image.shape[1], seed).numpy() for seed in range(1, calib + 1)]
    int8 = quantize_int8(fp32, out / f"{preset}.int8.onnx", images)
    rows["onnxruntime int8"] = median_ms(OnnxPredictor(int8, 0.05, max_det, threads=threads), image, runs)
    rows["PyTorch fp32 fused"] = median_ms(blendseg.load(ckpt, "cpu").fuse().predictor(0.05, max_det), image, runs)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["blendmask_r50_1x"])
    p.add_argument("--size", default="1216x800", help="image W x H")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calib", type=int, default=4, help="int8 calibration images")
    p.add_argument("--max-det", type=int, default=100)
    p.add_argument("--out", type=Path, default=Path("runs/bench_deploy"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    w, h = (int(v) for v in a.size.split("x"))
    image = scene(w, h)
    print(f"| preset @ {a.size} | " + " | ".join(["path", "ms", "x fp32"]) + " |\n|---|---|---|---|")
    for preset in a.presets:
        rows = measure(preset, image, a.out, a.runs, a.calib, a.max_det, a.threads)
        base = rows["PyTorch fp32"]
        for name, ms in rows.items():
            print(f"| {preset} | {name} | {ms:.0f} | {base / ms:.2f} |", flush=True)


if __name__ == "__main__":
    main()
