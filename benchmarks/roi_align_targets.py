"""Benchmark (not a test): building mask targets (28 x 28 RoIAlign crops of full-image bitmasks) at 800 x 1333 with
100 instances, with the compiled RoIAlign forward that ``ops.masks.crop_and_resize_masks`` calls and with
torchvision's Python ``_roi_align``, where ``torchvision.ops.roi_align`` goes on CUDA in deterministic mode.

    python -m benchmarks.roi_align_targets [--instances 100] [--runs 3]

Prints the median ms of each on this machine's CPU and whether they give the same targets.
"""

from __future__ import annotations

import argparse
import importlib

import torch

from benchmarks.common import median_ms
from blendseg.ops.masks import crop_and_resize_masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    n, h, w = a.instances, 800, 1333
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w - 200.0, h - 200.0])
    boxes = torch.cat([xy, xy + 20 + torch.rand(n, 2, generator=g) * 180], 1)
    masks = torch.zeros(n, h, w, dtype=torch.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes.round().int().tolist()):
        masks[i, y0:y1, x0:x1] = 1
    tv = importlib.import_module("torchvision.ops.roi_align")
    rois = torch.cat([torch.arange(float(n))[:, None], boxes], 1)
    python = lambda: (tv._roi_align(masks[:, None].float(), rois, 1.0, 28, 28, 0, True)[:, 0] >= 0.5).float()  # noqa: E731
    compiled = lambda: crop_and_resize_masks(masks, boxes, 28)  # noqa: E731
    t_c = median_ms(compiled, a.runs)
    try:
        same = torch.equal(python(), compiled())
        t_p = median_ms(python, a.runs)
        print(f"{n} instances at {h}x{w}: compiled {t_c:.0f} ms, Python _roi_align {t_p:.0f} ms ({t_p / t_c:.1f}x); "
              f"same targets: {same}")  # fmt: skip
    except RuntimeError as e:  # its adaptive sampling grid over whole masks: out of memory
        print(f"{n} instances at {h}x{w}: compiled {t_c:.0f} ms, Python _roi_align failed: {str(e)[:160]}")


if __name__ == "__main__":
    main()
