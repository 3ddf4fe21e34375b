"""The paper's accuracy claim against Mask R-CNN, on this machine: BlendMask, YOLACT, MEInst (the tiny presets) and
torchvision's Mask R-CNN on blendmask_tiny's narrow ResNet-18 + FPN (benchmarks/maskrcnn.py), each trained from
scratch on the same synthetic data, through the same loader and solver (blendmask_tiny's: AdamW, LR, batch,
augmentation; no per-model tuning), for the same wall-clock budget, then evaluated by the same COCO evaluator.

    python -m benchmarks.accuracy --out runs/accuracy --minutes 12

Writes results.json and results.md (mask AP, box AP, iterations, median single-image latency on 50 val images,
test-time resize included) into --out. Rows run one after another in this process, so each has the machine to
itself; do not run anything else meanwhile.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import write_markdown
from benchmarks.maskrcnn import TorchvisionMaskRCNN
from blendseg.data.loader import build_loader
from blendseg.data.sources import load_data
from blendseg.data.synth import synthesize
from blendseg.engine.fit import fit
from blendseg.engine.runner import (
    Evaluation,
    build_dataset,
    load_model,
    train,
    with_num_classes,
)
from blendseg.predict import predict_image
from blendseg.zoo import get_preset

ROWS = ["blendmask_tiny", "yolact_tiny", "meinst_tiny", "maskrcnn"]


def budgeted(preset: str, minutes: float, seed: int):
    cfg = get_preset(preset)
    return dataclasses.replace(cfg, seed=seed, solver=dataclasses.replace(cfg.solver, max_minutes=minutes))


def train_maskrcnn(cfg, data_yaml: str, out_dir: Path) -> tuple[dict, torch.nn.Module, object]:
    """The body of blendseg's runner with the torchvision model in place of ``build_model``: (metrics, model, the
    config with the data's class count)."""
    device = torch.device("cpu")
    torch.manual_seed(cfg.seed)
    ds = build_dataset(cfg, data_yaml, "train", train=True)
    cfg = with_num_classes(cfg, ds)
    out_dir.mkdir(parents=True, exist_ok=True)
    loader = build_loader(
        ds, cfg.solver.ims_per_batch, True, cfg.data.num_workers, cfg.model.size_divisibility, cfg.seed, False
    )
    model = TorchvisionMaskRCNN(cfg.model)
    eval_fn = Evaluation(cfg, data_yaml, device)
    metrics = fit(model, loader, cfg, out_dir, device, eval_fn, class_names=ds.class_names)
    del loader
    return metrics, model, cfg


@torch.no_grad()
def latency_ms(model: torch.nn.Module, cfg, data_yaml: str, images: int = 50) -> float:
    """Median ms per image (batch 1, the predictor's path: test-time resize, network, decoding, masks) on val."""
    from blendseg.data.coco import CocoInstances

    model.eval()
    split = load_data(data_yaml).splits["val"]
    ds = CocoInstances(split.annotations, split.images)
    times = []
    for info in ds.images[:images]:
        image = ds.read_image(info)
        t0 = time.perf_counter()
        dets = predict_image(model, cfg, image)
        if dets.masks is not None:
            dets.masks.to_tensor()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/accuracy"))
    p.add_argument("--minutes", type=float, default=12.0)
    p.add_argument("--rows", nargs="*", default=ROWS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=200)
    a = p.parse_args()
    data_yaml = a.out / "data" / "data.yaml"
    if not data_yaml.is_file():
        synthesize(data_yaml.parent, a.train_images, a.val_images, seed=0, difficulty="normal")
    path = a.out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {"minutes": a.minutes, "rows": []}
    for row in a.rows:
        run = a.out / f"{row}_seed{a.seed}"
        t0 = time.perf_counter()
        if row == "maskrcnn":
            metrics, model, cfg = train_maskrcnn(budgeted("blendmask_tiny", a.minutes, a.seed), str(data_yaml), run)
        else:
            metrics = train(budgeted(row, a.minutes, a.seed), str(data_yaml), run)
            model, cfg, _ = load_model(run / "weights" / "last.pt")
        log = (run / "train_log.jsonl").read_text().splitlines()
        iters = max(json.loads(line)["iteration"] for line in log)
        results["rows"].append({
            "model": row, "seed": a.seed, "iterations": iters, "wall_s": round(time.perf_counter() - t0),
            "mask_AP": round(metrics["segm"]["AP"], 1), "mask_AP50": round(metrics["segm"]["AP50"], 1),
            "box_AP": round(metrics["bbox"]["AP"], 1), "latency_ms": round(latency_ms(model, cfg, str(data_yaml)), 1),
        })  # fmt: skip
        path.write_text(json.dumps(results, indent=2))
    md = [f"Budget: {results['minutes']:g} minutes per row (wall clock, {torch.get_num_threads()} threads).", ""]
    md += ["| model | seed | iterations | mask AP | mask AP50 | box AP | latency ms/img |", "|---" * 7 + "|"]
    md += [
        f"| {r['model']} | {r['seed']} | {r['iterations']} | {r['mask_AP']} | {r['mask_AP50']} | {r['box_AP']} | "
        f"{r['latency_ms']} |"
        for r in results["rows"]
    ]
    write_markdown(a.out / "results.md", md)


if __name__ == "__main__":
    main()
