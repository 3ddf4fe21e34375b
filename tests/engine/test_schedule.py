"""The schedule a run follows: epochs keep the preset's step and warmup fractions, another step batch scales the
learning rate (linear for SGD, square root for AdamW) and the iteration counts as detectron2's REFERENCE_WORLD_SIZE."""

import dataclasses
import math

import pytest

from blendseg.config import SolverConfig, apply_overrides
from blendseg.engine.train import resolve_solver, scale_to_batch
from blendseg.zoo import get_preset

TINY = SolverConfig(optimizer="adamw", base_lr=2e-3, ims_per_batch=8, max_iter=3000, steps=(2250, 2760),
                    warmup_iters=100, checkpoint_period=500, eval_period=300, reference_batch=8)  # fmt: skip


def test_epochs_keep_the_step_and_warmup_fractions():
    s = resolve_solver(dataclasses.replace(TINY, epochs=12), iters_per_epoch=13, world_size=1)
    assert (s.max_iter, s.steps, s.warmup_iters) == (156, (117, 144), 5)  # 100/3000 of 156 = 5.2
    assert s.base_lr == TINY.base_lr and s.checkpoint_period == 500
    tiny = resolve_solver(dataclasses.replace(TINY, epochs=1, warmup_iters=10), iters_per_epoch=2, world_size=1)
    assert tiny.warmup_iters == 1  # a warmup, however short, stays one
    assert resolve_solver(dataclasses.replace(TINY, epochs=1, warmup_iters=0), 2, 1).warmup_iters == 0


def test_another_batch_scales_the_learning_rate_and_the_iterations():
    s = scale_to_batch(TINY, 32)  # AdamW: square root
    assert s.base_lr == pytest.approx(4e-3)
    assert (s.max_iter, s.steps, s.warmup_iters, s.checkpoint_period, s.eval_period) == (750, (562, 690), 25, 125, 75)
    sgd = dataclasses.replace(TINY, optimizer="sgd", base_lr=0.01, reference_batch=16)
    assert scale_to_batch(sgd, 8).base_lr == pytest.approx(0.005)  # linear
    assert scale_to_batch(sgd, 8).max_iter == 6000
    assert (
        scale_to_batch(TINY, 8) == TINY
        and scale_to_batch(dataclasses.replace(TINY, reference_batch=0), 32).base_lr == 2e-3
    )
    with_epochs = scale_to_batch(dataclasses.replace(TINY, epochs=5), 2)  # epochs count images already
    assert with_epochs.base_lr == pytest.approx(1e-3) and with_epochs.max_iter == 3000


def test_processes_multiply_the_batch_and_the_change_is_printed(capsys):
    s = resolve_solver(TINY, iters_per_epoch=10, world_size=4)
    assert s.base_lr == pytest.approx(2e-3 * math.sqrt(4)) and s.max_iter == 750
    out = capsys.readouterr().out
    assert "a step batch of 32 (4 x 8) for 8" in out and "base_lr 0.002 -> 0.004" in out
    resolve_solver(TINY, iters_per_epoch=10, world_size=1)
    assert capsys.readouterr().out == ""  # nothing changed, nothing said


def test_presets_record_the_batch_their_learning_rate_is_for():
    assert get_preset("blendmask_r50_1x").solver.reference_batch == 16
    assert get_preset("yolact_tiny").solver.reference_batch == 8
    cfg = apply_overrides(get_preset("blendmask_r50_1x"), ["solver.ims_per_batch=4"])
    assert resolve_solver(cfg.solver, 100, 1).base_lr == pytest.approx(0.0025)
    off = apply_overrides(cfg, ["solver.reference_batch=0"])
    assert resolve_solver(off.solver, 100, 1).base_lr == 0.01
