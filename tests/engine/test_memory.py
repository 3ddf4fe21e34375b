"""The per-GPU memory estimate: the probe runs each method's training forward and backward on the largest input
with busy targets, leaves the model and the generators as they were, and extrapolates the line through its two
measurements; off CUDA it is skipped (the CUDA measurement itself runs in tests/cuda)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from blendseg.engine.memory import GiB, MemoryEstimate, estimate_memory, probe_size
from blendseg.overrides import apply_overrides
from blendseg.zoo import build_model, get_preset, suite_presets


@pytest.mark.parametrize("preset", suite_presets())
def test_the_probe_trains_each_method_on_the_largest_input_and_restores_the_model(preset):
    cfg = apply_overrides(get_preset(preset), ["data.min_size_train=[96,128]", "data.max_size_train=160"])
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    if hasattr(model, "mask_encoding"):  # MEInst: a fitted codec
        d = cfg.model.meinst.dim_mask
        model.mask_encoding.load_fit(torch.eye(d, 28 * 28), torch.ones(d), torch.zeros(28 * 28))
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    seen = []

    def peak(fn) -> float:  # a stand-in for CUDA's allocator statistics: the batch the probe ran
        fn()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        seen.append(len(seen) + 1)
        return 1.0 * GiB + 0.5 * GiB * len(seen)

    state = torch.get_rng_state()
    est = estimate_memory(model, cfg, torch.device("cpu"), peak=peak)
    assert seen == [1, 2]
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(b, buffers[k]) for k, b in model.named_buffers())
    size = (128, 160) if cfg.data.square_size <= 0 else (cfg.data.square_size,) * 2
    assert est.size == probe_size(cfg) == size
    assert est.fixed == pytest.approx(1.0 * GiB) and est.per_image == pytest.approx(0.5 * GiB)
    assert estimate_memory(model, cfg, torch.device("cpu")) is None  # no measurement off CUDA


def test_the_estimate_names_the_accumulation_that_fits():
    est = MemoryEstimate(fixed=4 * GiB, per_image=6 * GiB, optimizer=0.5 * GiB, total=40 * GiB, size=(800, 1344))
    assert est.peak(2) == pytest.approx(16.5 * GiB)
    fits = est.message(share=4, accumulate=2)
    assert "about 16.5 GiB of 40.0 GiB for 2 image(s) of 800x1344" in fits and "warning" not in fits
    too_big = est.message(share=16, accumulate=1)
    assert "solver.accumulate=4 would put 4 through at a time" in too_big  # 8 a pass: 52.5 GiB; 4: 28.5 GiB
    assert est.smallest_accumulation(16) == 4
    huge = dataclasses.replace(est, fixed=float("inf"), per_image=0.0)
    assert "even one image of 800x1344 may not fit" in huge.message(share=2, accumulate=1)
