"""Benchmark (not a test): the BlendMask paper's ablations at an equal CPU training budget on the synthetic shapes.

    python -m benchmarks.blendmask_ablations --out runs/bench_blendmask --minutes 5 --groups merge bases resolution
    python -m benchmarks.blendmask_ablations --out runs/table1_hard_seed1 --minutes 20 --groups merge \\
        --difficulty hard --seed 1

Groups (each row a separate run of ``blendmask_tiny`` with one change, same data, same budget):
  merge       Table 1 analogue: blender (R 28, K 4, M 4) vs weighted-sum (M 1) vs assembler (K 16 = 4x4 tiles)
  bases       Table 3 analogue: K = 1, 2, 4, 8
  resolution  Table 2 analogue: R/M pairs 28/4, 28/7, 56/7, 56/14
  full        the preset itself (K 4, M 7, R 28, bilinear) for the 20-minute figure
  siblings    blendmask_tiny beside yolact_tiny and meinst_tiny (same backbone, recipe, data and budget; YOLACT
              squashes to 256 px)
  dims        MEInst Table 2 analogue: meinst_tiny with D = 20, 40, 60, 80, beside each D's reconstruction mIoU
              of the training masks (the upper bound of the paper's Fig. 5)
Writes results.json and results.md (mask and box AP, and single-image inference latency on 50 val images, per
row) into --out.

    python -m benchmarks.blendmask_ablations --out runs/bench_blendmask_latency --latency

measures instead where BlendMask inference time goes with 100 detections on an 800x1216 image
(blendmask_r50_1x, random init, score threshold 0 and no suppression so the top 100 survive, box sides 64 to
1024 px): network, decode, blend, and pasting, the last beside a one-shot full-image grid_sample paste (what a naive
implementation does; memory N x H x W floats).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from blendseg.data.synth import synthesize
from blendseg.engine.runner import train
from blendseg.modeling.core.fcos_inference import rescale_and_clip
from blendseg.ops.masks import paste_masks_in_image
from blendseg.zoo import build_model, get_preset

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
    "siblings": [
        ("blendmask_tiny", {}),
        ("yolact_tiny", {"preset": "yolact_tiny"}),
        ("meinst_tiny", {"preset": "meinst_tiny"}),
    ],
    "dims": [(f"D={d}", {"preset": "meinst_tiny", "head": "meinst", "dim_mask": d}) for d in (20, 40, 60, 80)],
}


def row_config(change: dict, minutes: float):
    """A preset (``preset`` key, default blendmask_tiny) with a change of its ``head`` sub-config (default
    "blendmask"), on a time budget."""
    change = dict(change)
    base = get_preset(change.pop("preset", "blendmask_tiny"))
    head = change.pop("head", "blendmask")
    model = base.model
    if change:
        model = dataclasses.replace(model, **{head: dataclasses.replace(getattr(model, head), **change)})
    return dataclasses.replace(base, model=model, solver=dataclasses.replace(base.solver, max_minutes=minutes))


@torch.no_grad()
def inference_latency(run: Path, data_yaml: str, images: int = 50) -> float:
    """Median seconds per image (batch 1, test-time resize included) of the run's final model on val images."""
    from blendseg.data.coco import CocoInstances
    from blendseg.data.sources import load_data
    from blendseg.engine.runner import load_model
    from blendseg.predict import predict_image

    model, cfg, _ = load_model(run / "weights" / "last.pt")
    split = load_data(data_yaml).splits["val"]
    ds = CocoInstances(split.annotations, split.images)
    times = []
    for i in range(min(images, len(ds))):
        image = ds.read_image(ds.images[i])
        t0 = time.perf_counter()
        predict_image(model, cfg, image)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def paste_all_at_once(masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The naive paste: one (N, H, W, 2) grid over the whole image for every mask, then threshold 0.5."""
    h, w = size
    x0, y0, x1, y1 = boxes.float().unbind(1)
    ys = ((torch.arange(h) + 0.5)[None] - y0[:, None]) / (y1 - y0)[:, None] * 2 - 1  # (N, H)
    xs = ((torch.arange(w) + 0.5)[None] - x0[:, None]) / (x1 - x0)[:, None] * 2 - 1  # (N, W)
    grid = torch.stack([xs[:, None, :].expand(-1, h, -1), ys[:, :, None].expand(-1, -1, w)], dim=3)
    return F.grid_sample(masks[:, None].float(), grid, align_corners=False)[:, 0] >= 0.5


def latency(out: Path, repeats: int = 3) -> dict:
    """Seconds per stage of BlendMask inference with 100 detections on one 800x1216 image (median of repeats)."""
    cfg = get_preset("blendmask_r50_1x").model
    cfg = dataclasses.replace(cfg, fcos=dataclasses.replace(cfg.fcos, inference_th=0.0, nms_th=1.0))
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    torch.nn.init.constant_(model.fcos.head.bbox_pred.bias, 4.0)  # boxes of 8 strides: 64 px on P3 .. 1024 on P7
    image = torch.rand(3, 800, 1216) * 255
    times: dict[str, list[float]] = {k: [] for k in ("network", "decode", "blend", "paste", "paste_naive")}
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            raw = model([image])
            t1 = time.perf_counter()
            dets = model.fcos.decode(raw.fcos)
            t2 = time.perf_counter()
            logits = model.mask_logits(raw.bases, dets)[0]
            t3 = time.perf_counter()
            _, clipped, keep = rescale_and_clip(dets[0].boxes, raw.fcos.image_sizes[0], (800, 1216))
            probs, boxes = logits[keep].sigmoid(), clipped[keep]
            t4 = time.perf_counter()
            masks = paste_masks_in_image(probs, boxes, (800, 1216))
            t5 = time.perf_counter()
            naive = paste_all_at_once(probs, boxes, (800, 1216))
            t6 = time.perf_counter()
            assert torch.equal(masks, naive), "the windowed paste must equal the full-image paste"
            for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t6 - t5)):
                times[k].append(dt)
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    res = {"detections": int(keep.sum()), "image": [800, 1216], "threads": torch.get_num_threads(), "seconds": med}
    res["paste_share_of_total"] = med["paste"] / (med["network"] + med["decode"] + med["blend"] + med["paste"])
    res["naive_over_windowed"] = med["paste_naive"] / med["paste"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_blendmask")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--groups", nargs="+", default=["merge", "bases", "resolution"], choices=sorted(GROUPS))
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--difficulty", default="normal", help="of the synthesized data (blendseg data synth)")
    p.add_argument("--seed", type=int, default=0, help="training seed of every row (the data stay seed 0)")
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--only", nargs="*", help="run only the rows with these names")
    p.add_argument("--latency", action="store_true", help="measure the inference stages instead of training")
    a = p.parse_args()
    out = Path(a.out)
    if a.latency:
        latency(out)
        return
    data_yaml = out / "data" / "data.yaml"
    if not data_yaml.is_file():
        synthesize(data_yaml.parent, a.train_images, a.val_images, seed=0, difficulty=a.difficulty)
    results = {"minutes": a.minutes, "seed": a.seed, "difficulty": a.difficulty, "threads": torch.get_num_threads()}
    results["rows"] = []
    for group in a.groups:
        for name, change in GROUPS[group]:
            if a.only and name not in a.only:
                continue
            cfg = dataclasses.replace(row_config(change, a.minutes), seed=a.seed)
            run = out / f"{group}_{name.replace(' ', '_').replace('/', '-').replace('=', '')}_seed{a.seed}"
            t0 = time.perf_counter()
            metrics = train(cfg, str(data_yaml), run)
            extra = {}
            if group == "dims":  # the reconstruction upper bound of this D on the training masks
                from blendseg.data.coco import CocoInstances
                from blendseg.data.encoding import fit_encoding
                from blendseg.data.sources import load_data

                tr = load_data(str(data_yaml)).splits["train"]
                fit = fit_encoding(CocoInstances(tr.annotations, tr.images), change["dim_mask"])
                extra["reconstruction_miou"] = round(fit["reconstruction_miou"] * 100, 1)
            iters = max(json.loads(line)["iteration"] for line in (run / "train_log.jsonl").read_text().splitlines())
            results["rows"].append({
                "group": group, "name": name, "change": change, "iterations": iters,
                "wall_s": round(time.perf_counter() - t0, 1),
                "mask_AP": round(metrics["segm"]["AP"], 1), "mask_AP50": round(metrics["segm"]["AP50"], 1),
                "box_AP": round(metrics["bbox"]["AP"], 1),
                "latency_ms": round(inference_latency(run, str(data_yaml)) * 1000, 1), **extra,
            })  # fmt: skip
            (out / "results.json").write_text(json.dumps(results, indent=2))
    md = [
        f"Budget: {a.minutes:g} CPU minutes per row; {a.difficulty} data, training seed {a.seed}.",
        "",
        "| group | variant | iterations | mask AP | mask AP50 | box AP | latency (ms/img) |",
    ]
    md.append("|---|---|---|---|---|---|---|")
    md += [
        f"| {r['group']} | {r['name']} | {r['iterations']} | {r['mask_AP']} | {r['mask_AP50']} | {r['box_AP']} "
        f"| {r['latency_ms']} |"
        + (f" reconstruction mIoU {r['reconstruction_miou']} |" if "reconstruction_miou" in r else "")
        for r in results["rows"]
    ]
    (out / "results.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
