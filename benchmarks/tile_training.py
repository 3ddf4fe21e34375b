"""Training on tiles of large images (``data.tile``, issue 39): blendmask_tiny trained for the same wall-clock
budget on the same large training images, once resized whole to the preset's training size and once cut into
tiles of the size it will be sliced at, then both evaluated plain and sliced on the same large validation images.

    python -m benchmarks.tile_training --out runs/tile_training --minutes 10

The images are ``blendseg data synth --object-scale``: --size x --size pictures whose shapes are sized as in
256-px images. Rows run one after another; do not run anything else meanwhile. Writes results.md into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from benchmarks.accuracy import budgeted
from benchmarks.common import write_markdown
from benchmarks.sliced import run
from blendseg.data.synth import synthesize
from blendseg.engine.runner import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/tile_training"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--train-images", type=int, default=48)
    p.add_argument("--val-images", type=int, default=12)
    p.add_argument("--size", type=int, default=640)
    p.add_argument("--object-scale", type=int, default=256)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    data = a.out / "data" / "data.yaml"
    if not data.is_file():
        synthesize(
            data.parent, a.train_images, a.val_images, seed=11, min_size=a.size, max_size=a.size,
            object_scale=a.object_scale,
        )  # fmt: skip
    rows = []
    for name, tile in (("whole images, resized", 0), (f"tiles of {a.tile}", a.tile)):
        run_dir = a.out / ("tiles" if tile else "whole")
        weights = run_dir / "weights" / "last.pt"
        if not weights.is_file():
            cfg = budgeted("blendmask_tiny", a.minutes, a.seed)
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, tile=tile))
            train(cfg, str(data), str(run_dir), evaluate=False)
        for how, extra in (("plain", []), (f"sliced {a.tile}", ["--slice", str(a.tile)])):
            r = run(weights, data, run_dir / how.replace(" ", "_"), extra)
            m = r["metrics"]
            rows.append(
                f"| {name} | {how} | {m['segm']['AP']:.1f} | {m['segm']['APs']:.1f} | {m['bbox']['AP']:.1f} | "
                f"{r['wall_s'] / a.val_images:.2f} |"
            )
            print(rows[-1], flush=True)
    md = [
        f"blendmask_tiny, {a.minutes:g} minutes of training each on {a.train_images} images of {a.size}x{a.size} "
        f"(objects at the scale of {a.object_scale}-px images); {a.val_images} validation images of the same kind",
        "",
        "| trained on | prediction | mask AP | mask AP_small | box AP | s / image (whole process) |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    write_markdown(a.out / "results.md", md)


if __name__ == "__main__":
    main()
