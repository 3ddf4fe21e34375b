"""Benchmark (not a test): the BlendMask paper's ablations at an equal CPU training budget on the synthetic shapes.

    python tools/bench_blendmask.py --out runs/bench_blendmask --minutes 5 --groups merge bases resolution

Groups (each row a separate run of ``blendmask_tiny`` with one change, same data, same budget):
  merge       Table 1 analogue: blender (R 28, K 4, M 4) vs weighted-sum (M 1) vs assembler (K 16 = 4x4 tiles)
  bases       Table 3 analogue: K = 1, 2, 4, 8
  resolution  Table 2 analogue: R/M pairs 28/4, 28/7, 56/7, 56/14
  full        the preset itself (K 4, M 7, R 28, bilinear) for the 20-minute figure
Writes results.json and results.md (mask and box AP per row) into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from blendseg.data.synth import synthesize
from blendseg.engine.runner import train
from blendseg.zoo import get_preset

NEAREST = {"top_interp": "nearest"}  # the paper's Tables 1-3 use nearest top interpolation
GROUPS = {
    "merge": [
        ("blender 28/4/4", {"bottom_resolution": 28, "num_bases": 4, "attn_size": 4, **NEAREST}),
        ("weighted-sum (M=1)", {"bottom_resolution": 28, "num_bases": 4, "attn_size": 1, **NEAREST}),
        ("assembler (K=16)", {"bottom_resolution": 28, "num_bases": 16, "attn_size": 4, "blender": "assembler"}),
    ],
    "bases": [(f"K={k}", {"bottom_resolution": 28, "num_bases": k, "attn_size": 7, **NEAREST}) for k in (1, 2, 4, 8)],
    "resolution": [
        (f"R={r} M={m}", {"bottom_resolution": r, "num_bases": 4, "attn_size": m, **NEAREST})
        for r, m in ((28, 4), (28, 7), (56, 7), (56, 14))
    ],
    "full": [("blendmask_tiny", {})],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_blendmask")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--groups", nargs="+", default=["merge", "bases", "resolution"], choices=sorted(GROUPS))
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=200)
    a = p.parse_args()
    out = Path(a.out)
    data_yaml = out / "data" / "data.yaml"
    if not data_yaml.is_file():
        synthesize(data_yaml.parent, a.train_images, a.val_images, seed=0, difficulty="normal")
    base = get_preset("blendmask_tiny")
    results = {"minutes": a.minutes, "rows": []}
    for group in a.groups:
        for name, change in GROUPS[group]:
            head = dataclasses.replace(base.model.blendmask, **change)
            cfg = dataclasses.replace(
                base,
                model=dataclasses.replace(base.model, blendmask=head),
                solver=dataclasses.replace(base.solver, max_minutes=a.minutes),
            )
            run = out / f"{group}_{name.replace(' ', '_').replace('/', '-').replace('=', '')}"
            t0 = time.perf_counter()
            metrics = train(cfg, str(data_yaml), run)
            iters = max(json.loads(line)["iteration"] for line in (run / "train_log.jsonl").read_text().splitlines())
            results["rows"].append({
                "group": group, "name": name, "change": change, "iterations": iters,
                "wall_s": round(time.perf_counter() - t0, 1),
                "mask_AP": round(metrics["segm"]["AP"], 1), "mask_AP50": round(metrics["segm"]["AP50"], 1),
                "box_AP": round(metrics["bbox"]["AP"], 1),
            })  # fmt: skip
            (out / "results.json").write_text(json.dumps(results, indent=2))
    md = [
        f"Budget: {a.minutes:g} CPU minutes per row.",
        "",
        "| group | variant | iterations | mask AP | mask AP50 | box AP |",
    ]
    md.append("|---|---|---|---|---|---|")
    md += [
        f"| {r['group']} | {r['name']} | {r['iterations']} | {r['mask_AP']} | {r['mask_AP50']} | {r['box_AP']} |"
        for r in results["rows"]
    ]
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
