"""Training learns: each method, from random weights, overfits six synthetic images in 400 steps (conftest's
``trained``): its loss falls and its box and mask AP on those images clear floors (measured at 400 steps on the
2-core development machine, 2 threads: BlendMask box 52.2 / mask 25.9, YOLACT 86.2 / 37.0, MEInst 58.2 / 39.9; the
floors leave room for other CPUs' rounding). Mask targets flipped left-right in the loss (a plausible indexing bug)
land below them: mask AP 11.5, 2.5 and 10.1."""

from __future__ import annotations

import json

import pytest

from blendseg.engine.runner import validate


@pytest.mark.slow
@pytest.mark.parametrize(
    "preset, box_floor, mask_floor",
    [("blendmask_tiny_test", 35.0, 15.0), ("yolact_tiny_test", 50.0, 15.0), ("meinst_tiny_test", 35.0, 20.0)],
)
def test_training_overfits_a_few_images(preset, box_floor, mask_floor, trained, overfit_data):
    run = trained(preset)
    logs = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logs if "loss" in r]
    assert logs[-1]["iteration"] == 400 and len(losses) >= 10
    first, last = sum(losses[1:4]) / 3, sum(losses[-3:]) / 3  # after the first (warm-up) step
    assert last < 0.6 * first, f"{preset}: loss {first:.3f} -> {last:.3f}"
    mask_losses = [r["loss_mask"] for r in logs if "loss_mask" in r]
    assert sum(mask_losses[-3:]) < sum(mask_losses[1:4]), f"{preset}: the mask loss did not fall"
    metrics = validate(str(run / "weights" / "last.pt"), str(overfit_data), split="train")
    assert metrics["bbox"]["AP"] >= box_floor, (preset, metrics["bbox"]["AP"])
    assert metrics["segm"]["AP"] >= mask_floor, (preset, metrics["segm"]["AP"])
