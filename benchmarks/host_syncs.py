"""Benchmark (not a test): the host synchronisations of one training step per method, counted at the dispatcher.

    python -m benchmarks.host_syncs --presets blendmask_tiny yolact_tiny meinst_tiny [--where]

For each preset: the demo's synthetic data (made once under --data), the preset's training loader and model, one
untimed step, then :class:`~blendseg.engine.syncs.SyncCensus` around the next ``--steps`` steps of the training
loop's work (:func:`~blendseg.engine.train.train_step`, which reads the losses on the host), reported per step by
operator. ``--where``: the lines of code they come from, most frequent first. tests/engine/test_syncs.py holds
each method to a ceiling.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch


def census(preset: str, data_yaml: Path, steps: int = 2, stacks: bool = False, batch: int = 4, overrides=()):
    """(the census, the number of steps it covers) of ``preset``'s training step (with ``overrides``) on the data
    of ``data_yaml``, batches of ``batch`` images; the first step is left out (optimiser state, caches)."""
    from blendseg.data.loader import build_loader
    from blendseg.engine.runner import build_dataset, with_num_classes
    from blendseg.engine.syncs import SyncCensus
    from blendseg.engine.train import build_optimizer, prepare_model, train_step
    from blendseg.overrides import apply_overrides
    from blendseg.zoo import build_model, get_preset

    cfg = apply_overrides(get_preset(preset), list(overrides))
    ds = build_dataset(cfg, str(data_yaml), "train", train=True)
    cfg = with_num_classes(cfg, ds)
    torch.manual_seed(0)
    loader = build_loader(ds, batch, True, 0, cfg.model.size_divisibility, 0)
    batches = [b for _, b in zip(range(steps + 1), loader)]
    model = build_model(cfg.model)
    if hasattr(model, "prepare"):
        model.prepare(ds, log=lambda *_: None)
    device = torch.device("cpu")
    model = prepare_model(model, cfg.solver, device).train()
    optimizer = build_optimizer(model, cfg.solver)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    counted = SyncCensus(stacks=stacks)
    counted.skip_optimizer(optimizer)
    for i, (images, targets) in enumerate(batches):
        with counted if i else _nothing():
            train_step(model, optimizer, scaler, [(images, targets)], cfg.solver, device, i)
    return counted, steps


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["blendmask_tiny", "yolact_tiny", "meinst_tiny"])
    p.add_argument("--data", default="runs/bench_train_step/data", type=Path)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--where", action="store_true", help="list the lines of code the syncs come from")
    a = p.parse_args()
    torch.set_num_threads(2)
    if not (a.data / "data.yaml").is_file():
        from blendseg.data.synth import synthesize

        synthesize(a.data, 2000, 0, seed=0)
    print("| preset | syncs per step | by operator | copies from Python data |\n|---|---|---|---|")
    found = {}
    for preset in a.presets:
        c, n = census(preset, a.data / "data.yaml", a.steps, stacks=a.where)
        ops = ", ".join(f"{k} {v / n:g}" for k, v in c.counts.most_common())
        print(f"| {preset} | {c.total / n:g} | {ops} | {c.copies / n:g} |")
        found[preset] = c
    if a.where:
        for preset, c in found.items():
            print(f"\n## {preset}")
            for (name, where), k in Counter(c.where).most_common():
                print(f"{k / a.steps:g} x {name}\n{where}")


if __name__ == "__main__":
    main()
