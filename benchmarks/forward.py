"""Forward-pass time of presets (random weights, inference mode): the backbone alone and the whole model forward
(network and head outputs, no decoding). Meant for A/B runs of two checkouts in alternating fresh processes:

    for i in 1 2; do for src in src ../other/src; do
        PYTHONPATH=$src OMP_NUM_THREADS=2 python benchmarks/forward.py blendmask_r50_1x@800x1216 yolact_resnet50@550x550
    done; done

Prints one line per row: the blendseg it imported, median ms of --runs calls after a warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch

import blendseg
from blendseg.zoo import build_model, get_preset


def median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rows", nargs="+", help="PRESET@HxW")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    where = Path(blendseg.__file__).resolve().parents[2]
    for row in a.rows:
        preset, hw = row.split("@")
        h, w = (int(v) for v in hw.split("x"))
        cfg = get_preset(preset).model
        cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, weights=""))
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        backbone = model.fcos.backbone if hasattr(model, "fcos") else model.backbone
        image = (torch.rand(3, h, w, generator=torch.Generator().manual_seed(1)) * 255).round()
        x = torch.randn(1, 3, h, w)
        with torch.inference_mode():
            t_backbone = median_ms(lambda b=backbone, x=x: b(x), a.runs)
            t_forward = median_ms(lambda m=model, im=image: m([im]), a.runs)
        print(f"{where}: {row} backbone {t_backbone:.0f} ms, forward {t_forward:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
