"""Sliced prediction on large images of small objects (issue 39): mask / box AP and AP_small, seconds and peak
memory per image, for plain prediction (the image resized to the preset's test size), sliced prediction and sliced
plus the full-image pass, each a ``blendseg val`` process on the same model and images.

    python -m benchmarks.sliced --model runs/tracking/blendmask_tiny_seed0/weights/last.pt --out runs/sliced

The images are ``blendseg data synth --object-scale``: shapes sized as in the 256-320 px training images, as many
per 288 x 288 as those hold, on --size x --size pictures. Writes results.md into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import write_markdown
from blendseg.data.synth import synthesize


def run(model: Path, data: Path, out: Path, extra: list[str]) -> dict:
    """metrics.json, wall seconds and peak RSS (MB) of one ``blendseg val`` process."""
    cmd = [sys.executable, "-m", "blendseg.cli", "val", str(model), str(data), "--out", str(out), *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(proc.stderr.read().decode()[-2000:])
    metrics = json.loads((out / "metrics.json").read_text())
    return {"metrics": metrics, "wall_s": time.perf_counter() - t0, "peak_mb": usage.ru_maxrss / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--out", type=Path, default=Path("runs/sliced"))
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--size", type=int, default=1280)
    p.add_argument("--object-scale", type=int, default=288)
    p.add_argument("--slice", type=int, default=320)
    p.add_argument("--overlap", type=float, default=0.2)
    a = p.parse_args()
    data = a.out / "data" / "data.yaml"
    if not data.is_file():
        synthesize(data.parent, 0, a.images, seed=7, min_size=a.size, max_size=a.size, object_scale=a.object_scale)
    slicing = ["--slice", str(a.slice), "--overlap", str(a.overlap)]
    variants = {"plain": [], f"sliced {a.slice}": slicing, f"sliced {a.slice} + full": [*slicing, "--slice-full"]}
    rows = []
    for name, extra in variants.items():
        r = run(a.model, data, a.out / name.replace(" ", "_").replace("+", "plus"), extra)
        m = r["metrics"]
        rows.append(
            f"| {name} | {m['segm']['AP']:.1f} | {m['segm']['APs']:.1f} | {m['bbox']['AP']:.1f} | "
            f"{m['bbox']['APs']:.1f} | {r['wall_s'] / a.images:.2f} | {r['peak_mb']:.0f} |"
        )
        print(rows[-1], flush=True)
    md = [
        f"{a.images} images of {a.size}x{a.size}, objects at the scale of {a.object_scale}-px images; model {a.model}",
        "",
        "| prediction | mask AP | mask AP_small | box AP | box AP_small | s / image (whole process) | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    write_markdown(a.out / "results.md", md)


if __name__ == "__main__":
    main()
