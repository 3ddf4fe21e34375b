"""`make demo`: synthesise the shapes dataset, train the tiny BlendMask on CPU on a budget of images seen, evaluate
box and mask AP with COCO eval, draw ground truth beside predictions on validation images, and draw the bases /
attention figure. Says what it will do and how long it expects to train before it starts (a 3-step probe of this
machine's speed); prints where everything went.

The budget is images seen, not minutes, so the demo's AP does not follow the machine's speed: a slow machine takes
longer to the same model (``--minutes M`` trains on a wall-clock budget instead, with the LR steps at the same
fractions of it)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from blendseg.config import SolverConfig
from blendseg.data.coco import CocoInstances
from blendseg.data.sources import load_data
from blendseg.data.synth import synthesize
from blendseg.engine.runner import load_model, train
from blendseg.figures import show_bases
from blendseg.overrides import apply_overrides
from blendseg.predict import draw_split
from blendseg.zoo import get_preset

DEMO_IMAGES = 8000  # images seen (1000 iterations of 8): mask AP >= 30 on the demo data (docs/benchmarks/training.md)


def budgeted(solver: SolverConfig, images: int, minutes: float) -> SolverConfig:
    """``solver`` for ``images`` seen (max_iter = images / batch, the LR steps at 75 % / 92 % of it, as the tiny
    recipe's) or, with ``minutes`` > 0, for that wall-clock budget (the preset's steps, as fractions of it)."""
    if minutes > 0:
        return dataclasses.replace(solver, max_minutes=minutes)
    iters = max(1, images // solver.ims_per_batch)
    steps = tuple(round(iters * s / solver.max_iter) for s in solver.steps)
    return dataclasses.replace(solver, max_iter=iters, steps=steps, max_minutes=0.0)


def seconds_per_step(cfg, data_yaml: Path, steps: int = 3) -> float:
    """This machine's time for one training step of ``cfg``: the median of ``steps`` steps on one batch of the
    training data after a warm-up step on it (a throwaway model; one batch shape, so that oneDNN's kernel set-up for
    a new shape, which training pays once per shape, stays out of the figure)."""
    from blendseg.data.loader import build_loader
    from blendseg.engine.runner import build_dataset, with_num_classes
    from blendseg.engine.train import build_optimizer, prepare_model, train_step
    from blendseg.zoo import build_model

    ds = build_dataset(cfg, str(data_yaml), "train", train=True)
    cfg = with_num_classes(cfg, ds)
    loader = build_loader(ds, cfg.solver.ims_per_batch, True, 0, cfg.model.size_divisibility, cfg.seed + 1)
    images, targets = next(iter(loader))
    device = torch.device("cpu")
    model = build_model(cfg.model)
    if hasattr(model, "prepare"):  # data-dependent state (MEInst's mask encoding), as training fits it
        model.prepare(ds, log=lambda *_: None)
    model = prepare_model(model, cfg.solver, device).train()
    optimizer, scaler = build_optimizer(model, cfg.solver), torch.amp.GradScaler("cpu", enabled=False)
    times = []
    for i in range(steps + 1):
        tic = time.perf_counter()
        train_step(model, optimizer, scaler, images, [dict(t) for t in targets], cfg.solver, device, i)
        times.append(time.perf_counter() - tic)
    return sorted(times[1:])[len(times[1:]) // 2]


def plan(cfg, a, data_yaml: Path) -> str:
    """What the demo will do, with the training time it expects on this machine."""
    from blendseg.engine.train import amp_dtype

    s = cfg.solver
    bf16 = amp_dtype(s, torch.device("cpu")) is not None
    how = ["channels-last"] if s.channels_last else []
    how += ["bf16 autocast" if bf16 else "fp32", f"{torch.get_num_threads()} threads"]
    what = f"demo plan: train {a.preset} ({', '.join(how)}) "
    then = f" then COCO box and mask AP on {a.val_images} validation images and the drawings."
    if s.max_minutes > 0:
        return what + f"for {s.max_minutes:g} minutes of wall clock," + then
    per_step = seconds_per_step(cfg, data_yaml)
    expect = per_step * s.max_iter / 60 * 1.2  # the data loading and logging beside the steps
    plan = what + f"on {s.max_iter * s.ims_per_batch} images seen ({s.max_iter} iterations of {s.ims_per_batch}),"
    plan += then + f"\nthis machine: {per_step:.2f} s a training step, so about {expect:.1f} min of training"
    if expect > 10:
        plan += " (a slow machine: --minutes 8 trains for 8 minutes instead, to a lower AP)"
    return plan


def training_time(run: Path) -> dict:
    """Iterations and training minutes (without the evaluation) from the run's train_log.jsonl: its last
    evaluation's row (logged when training ended), else its last iteration's."""
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "iteration" in r]
    last = next((r for r in reversed(steps) if "eval" in r), steps[-1])
    return {"iterations": last["iteration"], "training_minutes": round(last["time_s"] / 60, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--images", type=int, default=DEMO_IMAGES, help="training budget in images seen")
    p.add_argument("--minutes", type=float, default=0.0, help="a wall-clock training budget instead of --images")
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
    cfg = apply_overrides(get_preset(a.preset), a.overrides)
    cfg = dataclasses.replace(cfg, solver=budgeted(cfg.solver, a.images, a.minutes))
    print(plan(cfg, a, data_yaml), flush=True)
    run = out / "run"
    metrics = train(cfg, str(data_yaml), run)
    trained = training_time(run)
    model, cfg, _ = load_model(run / "weights" / "last.pt")
    split = load_data(data_yaml).splits["val"]
    val = CocoInstances(split.annotations, split.images)
    drawn = draw_split(model, cfg, val, run / "predictions")
    print("\n=== demo finished in %.1f min ===" % ((time.perf_counter() - t0) / 60))
    for kind in ("bbox", "segm"):
        if kind in metrics:
            m = metrics[kind]
            print(f"{kind:5s} AP {m['AP']:.1f}  AP50 {m['AP50']:.1f}  (COCO eval on {len(val)} val images)")
    print(f"training:     {trained['iterations']} iterations in {trained['training_minutes']:.1f} min")
    fig = show_bases(model, cfg, val.read_image(val.images[0]), val.class_names)
    if fig is not None:
        fig.save(run / "blend_figure.png")
        print(f"inside:       {(run / 'blend_figure.png').resolve()} (bases; per instance its attentions and mask)")
    print(f"run folder:   {run.resolve()}")
    print(f"metrics:      {(run / 'metrics.json').resolve()}")
    print(f"weights:      {(run / 'weights' / 'last.pt').resolve()}")
    print(f"predictions:  {len(drawn)} images in {(run / 'predictions').resolve()}")
    summary = {"images": None if a.minutes else a.images, "minutes": a.minutes or None, **trained}
    (out / "summary.json").write_text(json.dumps({**summary, "metrics": metrics}, indent=2))


if __name__ == "__main__":
    main()
