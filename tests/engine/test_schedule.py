"""The schedule a run follows: epochs keep the preset's step and warmup fractions, another step batch scales the
learning rate (linear for SGD, square root for AdamW) and the iteration counts as detectron2's REFERENCE_WORLD_SIZE."""

import dataclasses
import math

import pytest

from blendseg.config import ConfigError, SolverConfig
from blendseg.engine.train import resolve_solver, scale_to_batch, step_batch
from blendseg.overrides import apply_overrides
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


def test_ims_per_batch_is_the_batch_over_all_processes(capsys):
    """As the reference configs' IMS_PER_BATCH: 4 processes share the 8 images; ims_per_process gives each its own
    (the step batch grows, and the rule scales the schedule, printed); a batch that does not divide is refused."""
    assert step_batch(TINY, 4) == (8, 2) and resolve_solver(TINY, iters_per_epoch=10, world_size=4) == TINY
    assert capsys.readouterr().out == ""  # nothing changed, nothing said
    each = dataclasses.replace(TINY, ims_per_process=8)
    s = resolve_solver(each, iters_per_epoch=10, world_size=4)
    assert step_batch(each, 4) == (32, 8) and s.base_lr == pytest.approx(2e-3 * math.sqrt(4)) and s.max_iter == 750
    out = capsys.readouterr().out
    assert "a step batch of 32 (4 x 8) for 8" in out and "base_lr 0.002 -> 0.004" in out
    with pytest.raises(ConfigError, match="does not divide among 3 processes"):
        step_batch(TINY, 3)


@pytest.mark.parametrize("processes", [1, 2, 8])
def test_the_reference_recipe_on_1_2_and_8_processes(processes):
    """fcos_r50_1x is AdelaiDet's FCOS_R_50_1x.yaml (IMS_PER_BATCH 16, BASE_LR 0.01, MAX_ITER 90000, STEPS 60000 /
    80000, WARMUP_ITERS 1000) on any number of processes: 16 / P images each, the same schedule."""
    solver = get_preset("fcos_r50_1x").solver
    s = resolve_solver(solver, iters_per_epoch=100, world_size=processes)
    assert step_batch(solver, processes) == (16, 16 // processes)
    assert (s.base_lr, s.max_iter, s.steps, s.warmup_iters) == (0.01, 90000, (60000, 80000), 1000)


def test_what_the_user_typed_is_not_rescaled():
    """blendmask_tiny (batch 8) with solver.ims_per_batch=2 solver.max_iter=3: the LR follows the batch (not typed),
    max_iter stays 3 (typed), warmup and steps follow the batch."""
    cfg = apply_overrides(get_preset("blendmask_tiny"), ["solver.max_iter=3", "solver.ims_per_batch=2"])
    assert cfg.solver.as_given == ("max_iter",)
    s = resolve_solver(cfg.solver, 100, 1)
    assert s.max_iter == 3 and s.base_lr == pytest.approx(2e-3 / 2) and s.warmup_iters == 400
    lr = resolve_solver(apply_overrides(cfg, ["solver.base_lr=0.01"]).solver, 100, 1)
    assert lr.base_lr == 0.01 and lr.max_iter == 3


def test_presets_record_the_batch_their_learning_rate_is_for():
    assert get_preset("blendmask_r50_1x").solver.reference_batch == 16
    assert get_preset("yolact_tiny").solver.reference_batch == 8
    cfg = apply_overrides(get_preset("blendmask_r50_1x"), ["solver.ims_per_batch=4"])
    assert resolve_solver(cfg.solver, 100, 1).base_lr == pytest.approx(0.0025)
    off = apply_overrides(cfg, ["solver.reference_batch=0"])
    assert resolve_solver(off.solver, 100, 1).base_lr == 0.01
