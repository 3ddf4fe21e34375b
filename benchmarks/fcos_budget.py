"""Benchmark (not a test): box AP of the tiny FCOS trained from scratch for fixed CPU wall-clock budgets on the
synthetic shapes (normal difficulty), plus training throughput side by side with torchvision's FCOS.

    python -m benchmarks.fcos_budget --out runs/bench_fcos --minutes 10 20

Each budget is a separate run whose LR schedule is scaled to its budget (steps at 75% / 92% of the time); the
longest run also evaluates every ``--curve-every`` iterations for the learning curve. Writes results.json and
results.md (the table pasted into docs/benchmarks/) into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from blendseg.data.loader import build_loader
from blendseg.data.synth import synthesize
from blendseg.engine.runner import build_dataset, train
from blendseg.zoo import build_model, get_preset


def throughput(cfg, data_yaml: str, iters: int = 15) -> dict[str, float]:
    """Training images/s of blendseg's fcos_tiny and torchvision's FCOS (R-18, 128-ch FPN, 2-conv heads), on the
    same batches, measured one after the other in this process."""
    import torchvision
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    ds = build_dataset(cfg, data_yaml, "train", train=True)
    batches = []
    for i, b in enumerate(build_loader(ds, cfg.solver.ims_per_batch, True, 0, 32, seed=1)):
        batches.append(b)
        if i + 1 == iters + 3:
            break
    ours = build_model(cfg.model).train()
    backbone = BackboneWithFPN(
        torchvision.models.resnet18(), {"layer2": "0", "layer3": "1", "layer4": "2"}, [128, 256, 512], 128,
        extra_blocks=LastLevelP6P7(128, 128),
    )  # fmt: skip
    tv = FCOS(
        backbone, num_classes=len(ds.class_names) + 1, min_size=256, max_size=384,
        head=FCOSHead(128, 1, len(ds.class_names) + 1, num_convs=2),
    ).train()  # fmt: skip
    del torchvision

    def run(step) -> float:
        n, t = 0, 0.0
        for k, (images, targets) in enumerate(batches):
            tic = time.perf_counter()
            step(images, targets)
            if k >= 3:  # warm-up batches not timed
                t += time.perf_counter() - tic
                n += len(images)
        return n / t

    opt_a = torch.optim.AdamW(ours.parameters(), 1e-4)
    opt_b = torch.optim.SGD(tv.parameters(), 1e-3, momentum=0.9)

    def step_ours(images, targets):
        loss = sum(ours(images, targets).losses.values())
        opt_a.zero_grad()
        loss.backward()
        opt_a.step()

    def step_tv(images, targets):
        ims = [images.tensor[i, :, :h, :w] / 255.0 for i, (h, w) in enumerate(images.image_sizes)]
        tg = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
        loss = sum(tv(ims, tg).values())
        opt_b.zero_grad()
        loss.backward()
        opt_b.step()

    return {"blendseg_fcos_tiny_img_s": run(step_ours), "torchvision_fcos_r18_img_s": run(step_tv)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench_fcos")
    p.add_argument("--minutes", type=float, nargs="+", default=[10.0, 20.0])
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--curve-every", type=int, default=400)
    p.add_argument("--preset", default="fcos_tiny")
    a = p.parse_args()
    out = Path(a.out)
    data_yaml = out / "data" / "data.yaml"
    if not data_yaml.is_file():
        synthesize(data_yaml.parent, a.train_images, a.val_images, seed=0, difficulty="normal")
    base = get_preset(a.preset)
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": torch.get_num_threads(),
        "data": f"synthetic normal, seed 0, {a.train_images} train / {a.val_images} val images, 256-320 px",
        "throughput": throughput(base, str(data_yaml)),
        "runs": [],
    }
    for minutes in sorted(a.minutes):
        longest = minutes == max(a.minutes)
        solver = dataclasses.replace(base.solver, max_minutes=minutes, eval_period=a.curve_every if longest else 0)
        cfg = dataclasses.replace(base, solver=solver)
        run = out / f"run_{minutes:g}min"
        t0 = time.perf_counter()
        metrics = train(cfg, str(data_yaml), run)
        log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
        curve = [(r["iteration"], r["time_s"], round(r["eval"]["bbox"]["AP"], 1)) for r in log if "eval" in r]
        iters = max(r["iteration"] for r in log)
        results["runs"].append(
            {
                "minutes": minutes, "iterations": iters, "images_seen": iters * cfg.solver.ims_per_batch,
                "wall_s": round(time.perf_counter() - t0, 1),
                "bbox": {k: round(v, 1) for k, v in metrics["bbox"].items()}, "curve": curve,
            }
        )  # fmt: skip
        (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(to_markdown(results))
    print(to_markdown(results))


def to_markdown(r: dict) -> str:
    t = r["throughput"]
    lines = [
        f"Machine: {r['machine']}, {r['threads']} threads. Data: {r['data']}.",
        "",
        "| budget (min) | iterations | images seen | box AP | AP50 | AP75 | APs | APm | APl |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        b = run["bbox"]
        lines.append(
            f"| {run['minutes']:g} | {run['iterations']} | {run['images_seen']} | {b['AP']} | {b['AP50']} | "
            f"{b['AP75']} | {b['APs']} | {b['APm']} | {b['APl']} |"
        )
    longest = r["runs"][-1]
    if longest["curve"]:
        title = f"Learning curve of the {longest['minutes']:g}-minute run (box AP on val; LR decays at 75% / 92%):"
        lines += ["", title, "", "| iteration | time (s) | box AP |", "|---|---|---|"]
        lines += [f"| {i} | {s} | {ap} |" for i, s, ap in longest["curve"]]
    ratio = t["blendseg_fcos_tiny_img_s"] / t["torchvision_fcos_r18_img_s"]
    lines += [
        "",
        f"Training throughput on the same batches, same process: blendseg fcos_tiny {t['blendseg_fcos_tiny_img_s']:.1f}"
        f" img/s, torchvision FCOS R-18 / 128-ch FPN / 2-conv heads {t['torchvision_fcos_r18_img_s']:.1f} img/s "
        f"(ratio {ratio:.2f}x).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
