"""`make demo`: synthesise the shapes dataset, train the tiny BlendMask on CPU for a bounded time, evaluate box and
mask AP with COCO eval, draw ground truth beside predictions on validation images, and draw the bases / attention
figure. Prints where everything went."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from blendseg.config import apply_overrides
from blendseg.data.coco import CocoInstances, load_data_yaml
from blendseg.data.synth import synthesize
from blendseg.engine.runner import load_model, train
from blendseg.figures import show_bases
from blendseg.predict import draw_split
from blendseg.zoo import get_preset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--minutes", type=float, default=8.0, help="training wall-clock budget")
    p.add_argument("--preset", default="blendmask_tiny")
    p.add_argument("--train-images", type=int, default=2000)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("overrides", nargs="*")
    a = p.parse_args()
    out = Path(a.out)
    t0 = time.perf_counter()
    data_yaml = out / "data" / "data.yaml"
    if not data_yaml.is_file():
        print(f"synthesising {a.train_images} + {a.val_images} images into {data_yaml.parent} ...")
        synthesize(data_yaml.parent, a.train_images, a.val_images, seed=0, difficulty="normal")
    print(f"data ready in {time.perf_counter() - t0:.0f} s")
    torch.set_num_threads(torch.get_num_threads())
    cfg = get_preset(a.preset)
    cfg = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, max_minutes=a.minutes))
    cfg = apply_overrides(cfg, a.overrides)
    run = out / "run"
    metrics = train(cfg, str(data_yaml), run)
    model, cfg, _ = load_model(run / "weights" / "last.pt")
    split = load_data_yaml(data_yaml).splits["val"]
    val = CocoInstances(split.annotations, split.images)
    drawn = draw_split(model, cfg, val, run / "predictions")
    print("\n=== demo finished in %.1f min ===" % ((time.perf_counter() - t0) / 60))
    for kind in ("bbox", "segm"):
        if kind in metrics:
            m = metrics[kind]
            print(f"{kind:5s} AP {m['AP']:.1f}  AP50 {m['AP50']:.1f}  (COCO eval on {len(val)} val images)")
    fig = show_bases(model, cfg, val.read_image(val.images[0]), val.class_names)
    if fig is not None:
        fig.save(run / "blend_figure.png")
        print(f"inside:       {(run / 'blend_figure.png').resolve()} (bases; per instance its attentions and mask)")
    print(f"run folder:   {run.resolve()}")
    print(f"metrics:      {(run / 'metrics.json').resolve()}")
    print(f"weights:      {(run / 'weights' / 'last.pt').resolve()}")
    print(f"predictions:  {len(drawn)} images in {(run / 'predictions').resolve()}")
    (out / "summary.json").write_text(json.dumps({"minutes": a.minutes, "metrics": metrics}, indent=2))


if __name__ == "__main__":
    main()
