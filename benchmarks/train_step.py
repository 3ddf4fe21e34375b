"""Benchmark (not a test): training-step time of a preset on fixed batches, one variant per fresh process.

    python -m benchmarks.train_step compare --presets blendmask_tiny yolact_tiny meinst_tiny --rounds 3 \\
        --variants base channels_last
    python -m benchmarks.train_step one --preset blendmask_tiny --variant channels_last   # a single measurement

``compare`` runs each (preset, variant) in its own process, alternating the variants round by round so that the
machine's drift falls on all of them alike, and prints the median ms / step and images / s with the ratio to the
first variant. Each process: the demo's synthetic data (made once under --data), the preset's training loader with
its augmentation, ``--batches`` batches taken once and cycled, ``--warmup`` untimed steps, then ``--steps`` timed
steps of the real :func:`~blendseg.engine.train.train_step` (forward, loss, backward, clip, AdamW). The first step's
losses are printed, so a variant that changes the numbers shows it. ``--loop`` times the whole training loop
instead (:func:`~blendseg.engine.runner.train` without evaluation: loader, logging and all, the time from iteration
20 to 20 + --steps read from its train_log.jsonl; --steps a multiple of 20).

Variants are ``SolverConfig`` / ``DataConfig`` overrides (``--variants`` names below, or ``name=key=value,...``):
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

VARIANTS = {  # the tiny presets train in channels-last with bf16 autocast; "base" is the fp32 NCHW step before
    "base": "solver.channels_last=false,solver.amp=false",
    "preset": "",
    "before": "",
    "channels_last_fp32": "solver.channels_last=true,solver.amp=false",
    "bf16": "solver.channels_last=false,solver.amp=true",
    "channels_last_bf16": "solver.channels_last=true,solver.amp=true",
}
__doc__ += "\n".join(f"    {k}: {v}" for k, v in VARIANTS.items()) + "\n"


def measure_loop(preset: str, overrides: list[str], data: Path, steps: int) -> dict:
    """ms per iteration of ``preset``'s whole training loop, from iteration 20 to 20 + ``steps``."""
    import tempfile

    from blendseg.engine.runner import train
    from blendseg.overrides import apply_overrides
    from blendseg.zoo import get_preset

    schedule = [f"solver.max_iter={20 + steps}", "solver.checkpoint_period=0"]
    cfg = apply_overrides(get_preset(preset), [*overrides, *schedule])
    with tempfile.TemporaryDirectory() as out:
        train(cfg, str(data / "data.yaml"), out, evaluate=False)
        rows = [json.loads(line) for line in (Path(out) / "train_log.jsonl").read_text().splitlines()]
    t = {r["iteration"]: r["time_s"] for r in rows if "time_s" in r and "eval" not in r}
    ms = 1000 * (t[20 + steps] - t[20]) / steps
    return {"ms": ms, "batch": cfg.solver.ims_per_batch, "first_losses": None, "batch_shape": None}


def measure(preset: str, overrides: list[str], data: Path, batches: int, warmup: int, steps: int) -> dict:
    """ms per step of ``preset`` with ``overrides`` on ``batches`` fixed batches of the demo data."""
    from blendseg.data.loader import build_loader
    from blendseg.engine.runner import build_dataset, with_num_classes
    from blendseg.engine.train import build_optimizer, train_step
    from blendseg.overrides import apply_overrides
    from blendseg.zoo import build_model, get_preset

    data_yaml = data / "data.yaml"
    cfg = apply_overrides(get_preset(preset), overrides)
    ds = build_dataset(cfg, str(data_yaml), "train", train=True)
    cfg = with_num_classes(cfg, ds)
    torch.manual_seed(0)
    loader = build_loader(ds, cfg.solver.ims_per_batch, True, 0, cfg.model.size_divisibility, 0)
    fixed = [b for _, b in zip(range(batches), loader)]
    model = build_model(cfg.model)
    if hasattr(model, "prepare"):
        model.prepare(ds, log=lambda *_: None)
    device = torch.device("cpu")
    try:  # the code before channels-last training (--before) has no prepare_model
        from blendseg.engine.train import prepare_model

        model = prepare_model(model, cfg.solver, device)
    except ImportError:
        model.to(device)
    optimizer = build_optimizer(model, cfg.solver)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    model.train()
    first, times = None, []
    for i in range(warmup + steps):
        images, targets = fixed[i % len(fixed)]
        tic = time.perf_counter()
        if "batches" in inspect.signature(train_step).parameters:
            losses = train_step(model, optimizer, scaler, [(images, targets)], cfg.solver, device, i)
        else:  # the code before gradient accumulation (--before)
            losses = train_step(model, optimizer, scaler, images, targets, cfg.solver, device, i)
        if i >= warmup:
            times.append(time.perf_counter() - tic)
        if first is None:
            first = {k: round(float(v), 5) for k, v in losses.items()}
    ms = 1000 * statistics.median(times)
    shape = [list(images.tensor.shape) for images, _ in fixed]
    return {"ms": ms, "batch": cfg.solver.ims_per_batch, "first_losses": first, "batch_shape": shape}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    for name in ("one", "compare"):
        s = sub.add_parser(name)
        s.add_argument("--data", default="runs/bench_train_step/data", type=Path)
        s.add_argument("--batches", type=int, default=3)
        s.add_argument("--warmup", type=int, default=2)
        s.add_argument("--steps", type=int, default=8)
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--loop", action="store_true", help="time the whole training loop (loader included)")
    one = sub.choices["one"]
    one.add_argument("--preset", default="blendmask_tiny")
    one.add_argument("--variant", default="base")
    cmp = sub.choices["compare"]
    cmp.add_argument("--presets", nargs="+", default=["blendmask_tiny"])
    cmp.add_argument("--variants", nargs="+", default=["base", "preset"])
    cmp.add_argument("--rounds", type=int, default=3)
    cmp.add_argument(
        "--before", type=Path, help="a checkout of an earlier commit: its code runs as the first variant, 'before' "
        "(its presets as they were, no overrides), e.g. git worktree add /tmp/before c585d2e",
    )  # fmt: skip
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.mode == "one":
        spec = VARIANTS.get(a.variant, a.variant.partition("=")[2])
        overrides = [s for s in spec.split(",") if s]
        if not (a.data / "data.yaml").is_file():
            from blendseg.data.synth import synthesize

            synthesize(a.data, 2000, 0, seed=0)
        if a.loop:
            r = measure_loop(a.preset, overrides, a.data, a.steps)
        else:
            r = measure(a.preset, overrides, a.data, a.batches, a.warmup, a.steps)
        print(json.dumps(r))
        return
    rows: dict[tuple[str, str], list[dict]] = {}
    common = ["--data", str(a.data), "--batches", str(a.batches), "--warmup", str(a.warmup)]
    common += ["--steps", str(a.steps), "--threads", str(a.threads)] + (["--loop"] if a.loop else [])
    variants = (["before"] if a.before else []) + a.variants
    for rnd in range(a.rounds):
        for preset in a.presets:
            for variant in variants:
                env = dict(os.environ)
                if variant == "before":
                    env["PYTHONPATH"] = str(a.before.resolve() / "src")
                cmd = [sys.executable, __file__, "one", "--preset", preset, "--variant", variant, *common]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
                out = out.strip().splitlines()[-1]
                r = json.loads(out)
                rows.setdefault((preset, variant), []).append(r)
                print(f"round {rnd}: {preset:16s} {variant:20s} {r['ms']:7.1f} ms/step  losses {r['first_losses']}")
    what = "ms / iteration (the loop)" if a.loop else "ms / step"
    print(f"\n| preset | variant | {what}, median of {a.rounds} | images / s | vs {variants[0]} |")
    print("|---|---|---|---|---|")
    for preset in a.presets:
        base = statistics.median(r["ms"] for r in rows[(preset, variants[0])])
        for variant in variants:
            ms = statistics.median(r["ms"] for r in rows[(preset, variant)])
            ips = rows[(preset, variant)][0]["batch"] / ms * 1000
            print(f"| {preset} | {variant} | {ms:.0f} | {ips:.1f} | {base / ms:.2f}x |")


if __name__ == "__main__":
    main()
