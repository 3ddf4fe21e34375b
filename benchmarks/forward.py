"""Forward-pass time of presets (random weights, inference mode): the backbone alone and the whole model forward
(network and head outputs, no decoding). Meant for A/B runs of two checkouts in alternating fresh processes:

    for i in 1 2; do for src in src ../other/src; do
        PYTHONPATH=$src OMP_NUM_THREADS=2 python -m benchmarks.forward blendmask_r50_1x@800x1216 yolact_resnet50@550x550
    done; done

Prints one line per row: the blendseg it imported, median ms of --runs calls after a warm-up.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import blendseg
from benchmarks.common import median_ms
from benchmarks.speed import build, row_input


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rows", nargs="+", help="PRESET@HxW")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    where = Path(blendseg.__file__).resolve().parents[2]
    for row in a.rows:
        preset, h, w, image = row_input(row)
        torch.manual_seed(0)
        model = build(preset)
        backbone = model.fcos.backbone if hasattr(model, "fcos") else model.backbone
        x = torch.randn(1, 3, h, w)
        with torch.inference_mode():
            t_backbone = median_ms(lambda b=backbone, x=x: b(x), a.runs)
            t_forward = median_ms(lambda m=model, im=image: m([im]), a.runs)
        print(f"{where}: {row} backbone {t_backbone:.0f} ms, forward {t_forward:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
