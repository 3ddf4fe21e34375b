"""Fine-tuning on a small custom dataset (issue 20's evidence): pretrain each tiny preset on the synthetic shapes, make
a "custom" split (hard difficulty, 3 of the 6 classes under new names and ids, 100 + 100 images), then fine-tune
from the pretrained weights with the default recipe (``--weights`` and ``solver.epochs`` only) and with a sweep (3
learning rates x 2 schedules, half and all of the default's epochs, x frozen / trainable backbone), from scratch for
reference, and the default recipe again on the YOLO-format copy of the custom split.

    python -m benchmarks.finetune --out runs/finetune --methods blendmask_tiny
    python -m benchmarks.finetune --out runs/finetune_smoke --smoke      # every run for one iteration

Writes results-<methods>.json / .md (mask AP, box AP, training minutes per run) into --out, so one method per call
can spread the sweep over sessions or run methods side by side (``--threads 1`` each); a run whose folder holds its
metrics.json is read back, not trained again (delete the folder to retrain it). Pretraining is counted in epochs
(3 of the 1890 annotated images of the 2000: 708 iterations, 44 minutes on one thread of this machine shared with
two other runs), so its result does not depend on what else the machine runs; the sweep is counted in epochs too.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from blendseg.data.convert import convert_dataset
from blendseg.data.synth import synthesize
from blendseg.engine.checkpoint import load_checkpoint
from blendseg.engine.runner import train
from blendseg.overrides import apply_overrides
from blendseg.zoo import get_preset

METHODS = ["blendmask_tiny", "yolact_tiny", "meinst_tiny"]
CUSTOM = {"circle": ("coin", 101), "triangle": ("wedge", 102), "star": ("badge", 103)}  # kept classes, renamed


def custom_split(out: Path, seed: int = 7) -> Path:
    """The synthetic hard split with only the CUSTOM classes, under new names and category ids."""
    src = synthesize(out / "source", train=100, val=100, seed=seed, difficulty="hard")
    doc = {"path": str(out.resolve()), "names": "auto"}
    for split in ("train", "val"):
        coco = json.loads((src.parent / split / "annotations.json").read_text())
        old = {c["id"]: c["name"] for c in coco["categories"]}
        coco["categories"] = [{"id": i, "name": n} for n, i in CUSTOM.values()]
        coco["annotations"] = [
            {**a, "category_id": CUSTOM[old[a["category_id"]]][1]}
            for a in coco["annotations"]
            if old[a["category_id"]] in CUSTOM
        ]
        (out / f"{split}.json").write_text(json.dumps(coco))
        doc[split] = {"images": str((src.parent / split / "images").resolve()), "annotations": f"{split}.json"}
    import yaml

    (out / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return out / "data.yaml"


def run(preset: str, data: Path, out: Path, overrides: list[str], weights: str | None) -> dict:
    """Train (or, where ``out`` holds a finished run, read it back) and return its AP and training minutes."""
    if not (out / "metrics.json").is_file():
        train(apply_overrides(get_preset(preset), overrides), str(data), out, init_weights=weights)
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "mask_AP": round(metrics.get("segm", {}).get("AP", float("nan")), 2),
        "box_AP": round(metrics.get("bbox", {}).get("AP", float("nan")), 2),
        "minutes": round(load_checkpoint(out / "weights" / "last.pt")["elapsed_s"] / 60, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/finetune"))
    p.add_argument("--pretrain-epochs", type=int, default=3, help="of the 2000-image synthetic split")
    p.add_argument("--epochs", type=int, default=12, help="the default recipe's schedule (the sweep adds half of it)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--smoke", action="store_true", help="every run for one iteration (checks the script)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    short = ["solver.max_iter=1", "solver.epochs=0", "data.num_workers=0"] if a.smoke else []
    pre_data = a.out / "pretrain_data" / "data.yaml"  # made once (seed 0): a later call reuses it
    if not pre_data.is_file():
        pre_data = synthesize(pre_data.parent, train=40 if a.smoke else 2000, val=20 if a.smoke else 200)
    custom = custom_split(a.out / "custom")
    yolo, _ = convert_dataset(custom, "yolo", a.out / "custom_yolo")
    rows = []
    for preset in a.methods:
        pre = a.out / f"pretrain_{preset}"
        budget = [f"solver.epochs={a.pretrain_epochs}"]
        rows.append({"method": preset, "run": "pretrain", **run(preset, pre_data, pre, budget + short, None)})
        weights = str(pre / "weights" / "last.pt")
        base_lr = get_preset(preset).solver.base_lr
        default = [f"solver.epochs={a.epochs}"]
        runs = [("default", default, weights, custom), ("from scratch", default, None, custom),
                ("default, YOLO labels", default, weights, yolo)]  # fmt: skip
        for scale in (0.3, 1.0, 3.0):
            for epochs in (a.epochs // 2, a.epochs):
                for freeze in (0, 5):
                    name = f"lr {scale:g}x, {epochs} epochs, freeze_at={freeze}"
                    sweep = [f"solver.epochs={epochs}", f"solver.base_lr={base_lr * scale}",
                             f"model.backbone.freeze_at={freeze}"]  # fmt: skip
                    runs.append((name, sweep, weights, custom))
        for name, overrides, w, data in runs:
            out = a.out / preset / name.replace(" ", "_").replace(",", "").replace("=", "")
            rows.append({"method": preset, "run": name, **run(preset, data, out, overrides + short, w)})
            (a.out / f"results-{'-'.join(a.methods)}.json").write_text(json.dumps(rows, indent=1))
            print(rows[-1], flush=True)
    lines = ["| method | run | mask AP | box AP | minutes |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['run']} | {r['mask_AP']} | {r['box_AP']} | {r['minutes']} |" for r in rows]
    (a.out / f"results-{'-'.join(a.methods)}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
