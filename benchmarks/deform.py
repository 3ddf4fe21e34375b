"""Deformable convolution: blendseg's grid_sample + matmul form against torchvision's CPU kernel on the shapes the
models run (a 256-channel P3 map of a 608 px image, YOLACT++'s 128-channel C3 blocks at 550 px, stride 1 and 2).

    python benchmarks/deform.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from bench_predict import median_ms  # noqa: E402
from blendseg.ops.deform import deform_conv2d  # noqa: E402

SHAPES = [(256, (50, 76), 1), (128, (69, 69), 1), (128, (138, 138), 2)]  # channels, (H, W), stride


def main() -> None:
    torch.manual_seed(0)
    print("| channels | input | stride | torchvision ms | blendseg ms | speed-up |\n|---|---|---|---|---|---|")
    with torch.inference_mode():
        for c, (h, w), stride in SHAPES:
            x, weight = torch.randn(1, c, h, w), torch.randn(c, c, 3, 3) * 0.01
            ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
            offset, mask = torch.randn(1, 18, ho, wo), torch.rand(1, 9, ho, wo)
            ref = median_ms(lambda: tv_deform_conv2d(x, offset, weight, None, stride, 1, 1, mask), 3)  # noqa: B023
            ours = median_ms(lambda: deform_conv2d(x, offset, weight, None, stride, 1, 1, mask), 3)  # noqa: B023
            print(f"| {c} | {h}x{w} | {stride} | {ref:.1f} | {ours:.1f} | {ref / ours:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
