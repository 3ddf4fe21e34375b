"""Benchmark (not a test): training on 22-megapixel JPEGs with and without the reduced decode
(``data.decode_reduced``: libjpeg's DCT scaling to the smallest 1/2, 1/4 or 1/8 that keeps the largest training
size).

    python -m benchmarks.large_images --preset blendmask_tiny --images 6 --steps 20 --rounds 2

Writes ``--images`` synthetic 5760 x 3840 photos (benchmarks.common.photo) with ten polygon instances each, then
times the whole training loop (:func:`benchmarks.train_step.measure_loop`: loader on the main process, masks
rasterised, resize, step) from iteration 20 to 20 + ``--steps`` for each variant, alternating round by round, and
prints the median ms per iteration and the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.common import photo
from benchmarks.train_step import measure_loop


def make_data(folder: Path, n: int, w: int = 5760, h: int = 3840) -> Path:
    """``n`` photos of w x h and a COCO JSON of ten rectangles and triangles each (train = val)."""
    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        name = f"{i}.jpg"
        if not (folder / name).exists():
            photo(folder / name, w, h, seed=i)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for k in range(10):
            x, y, s = 300 + 500 * k, 400 + 250 * (k % 5), 300 + 40 * k
            poly = [x, y, x + s, y, x + s, y + s, x, y + s] if k % 2 else [x, y + s, x + s // 2, y, x + s, y + s]
            area = float(s * s if k % 2 else s * s / 2)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + k % 2, "segmentation": [poly],
                         "bbox": [x, y, s, s], "area": area, "iscrowd": 0})  # fmt: skip
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    (folder / "ann.json").write_text(json.dumps(coco))
    (folder / "data.yaml").write_text("train: {images: ., annotations: ann.json}\n")  # paths beside it
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="blendmask_tiny")
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--data", default="runs/bench_large_images")
    a = ap.parse_args()
    data = make_data(Path(a.data), a.images)
    common = [f"solver.ims_per_batch={a.batch}", "solver.reference_batch=0", "data.num_workers=0"]
    variants = {"full decode": ["data.decode_reduced=false"], "reduced decode": ["data.decode_reduced=true"]}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(a.rounds):
        for name, over in variants.items():
            ms = measure_loop(a.preset, [*common, *over], data, a.steps)["ms"]
            times[name].append(ms)
            print(f"round {r}: {name}: {ms:.0f} ms / iteration", flush=True)
    base = statistics.median(times["full decode"])
    print(f"\n{a.preset}, batch {a.batch}, 5760x3840 JPEGs, loader on the main process:")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name}: {med:.0f} ms / iteration ({base / med:.2f}x)")


if __name__ == "__main__":
    main()
