"""The training step's numbers on a fixed batch, for the speed-ups of issue 23: each method's tiny preset gives the
loss values recorded from the fp32 channels-first code before them, the same values in channels-last memory format,
and close ones under bf16 autocast; one step moves the weights alike."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from blendseg.data.loader import build_loader
from blendseg.engine.runner import build_dataset, with_num_classes
from blendseg.engine.train import amp_context, prepare_model
from blendseg.zoo import build_model, get_preset

# model(images, targets).losses at commit c585d2e (before channels-last / bf16 training), torch 2.14.1, 2 threads:
# seed 0, the first batch of 4 of build_loader(seed 0) on conftest's synth_data
RECORDED = {
    "blendmask_tiny_test": {"loss_fcos_cls": 1.1200478, "loss_fcos_loc": 0.9400444, "loss_fcos_ctr": 0.6936479,
                            "loss_mask": 0.6926886, "loss_basis_sem": 0.6221263},
    "yolact_tiny_test": {"loss_box": 4.7249899, "loss_cls": 11.2882595, "loss_mask": 6.8625655, "loss_sem": 4.2092624},
    "meinst_tiny_test": {"loss_fcos_cls": 1.1308517, "loss_fcos_loc": 0.9400241, "loss_fcos_ctr": 0.6972532,
                         "loss_mask": 1.0510880},
}  # fmt: skip


def setup(preset: str, data_yaml, **solver):
    """(cfg, model, batch): the preset with ``solver`` overrides, its model at seed 0, the fixed batch."""
    cfg = get_preset(preset)
    cfg = dataclasses.replace(cfg, solver=dataclasses.replace(cfg.solver, **solver))
    ds = build_dataset(cfg, str(data_yaml), "train", train=True)
    cfg = with_num_classes(cfg, ds)
    torch.manual_seed(0)
    batch = next(iter(build_loader(ds, 4, True, 0, cfg.model.size_divisibility, 0)))
    torch.manual_seed(0)
    model = build_model(cfg.model)
    if hasattr(model, "prepare"):
        model.prepare(ds, log=lambda *_: None)
    return cfg, prepare_model(model, cfg.solver, torch.device("cpu")).train(), batch


def grads(preset: str, data_yaml, **solver) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The losses of one forward (through train_step's autocast and memory format) and the parameters' gradients."""
    cfg, model, (images, targets) = setup(preset, data_yaml, **solver)
    fmt = torch.channels_last if cfg.solver.channels_last else torch.preserve_format
    with amp_context(cfg.solver, torch.device("cpu")):
        losses = model(images.to("cpu", memory_format=fmt), targets).losses
    sum(losses.values()).backward()
    named = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in losses.items()}, named


@pytest.mark.parametrize("preset", sorted(RECORDED))
def test_losses_match_the_recorded_values_fp32_and_channels_last(preset, synth_data):
    torch.set_num_threads(2)
    recorded = RECORDED[preset]
    for channels_last in (False, True):
        losses, _ = grads(preset, synth_data, channels_last=channels_last, amp=False)
        assert set(losses) == set(recorded)
        for k, v in recorded.items():
            assert losses[k] == pytest.approx(v, rel=2e-5, abs=1e-6), (preset, channels_last, k)


@pytest.mark.parametrize("preset", sorted(RECORDED))
def test_channels_last_and_bf16_gradients_match_fp32(preset, synth_data):
    """Channels-last is the same fp32 arithmetic in another order, so its gradient is fp32's up to rounding, except
    where a ReLU input within rounding of 0 flips (MEInst: 2 of 20 480 mask-tower units, whose large gradients move
    a few tensors by 3-4 %; the NCHW gradient agrees with fp64 to 2e-6). bf16 autocast rounds every convolution's
    inputs to 8 mantissa bits: its gradient points the same way, not to 1e-3 (cosine 0.94-0.96 measured)."""
    torch.set_num_threads(2)
    cos = torch.nn.functional.cosine_similarity
    base_losses, base = grads(preset, synth_data, channels_last=False, amp=False)
    flat = torch.cat([g.flatten() for g in base.values()])
    assert len(base) > 20 and flat.norm() > 0
    live = [k for k, g in base.items() if g.norm() > 1e-6 * flat.norm()]  # not the zero grads of biases before BN
    for solver, overall, per_tensor in ((dict(channels_last=True, amp=False), 0.998, 0.99),
                                        (dict(channels_last=True, amp=True), 0.9, 0.6)):  # fmt: skip
        losses, other = grads(preset, synth_data, **solver)
        assert set(other) == set(base)
        rel = 2e-2 if solver["amp"] else 2e-5  # the losses are computed in fp32 either way
        for k, v in base_losses.items():
            assert losses[k] == pytest.approx(v, rel=rel, abs=1e-6), (solver, k)
        assert cos(torch.cat([other[k].flatten() for k in base]), flat, dim=0) > overall, solver
        worst = min(float(cos(other[k].flatten(), base[k].flatten(), dim=0)) for k in live)
        assert worst > per_tensor, solver


def test_a_strided_1x1_conv_on_channels_last_input_subsamples_first():
    """ResNet shortcuts (1x1, stride 2) of narrow models: PyTorch 2.14's CPU backward of that conv on channels-last
    input with 2-15 input channels crashes the process; Conv2dNorm subsamples and runs a stride-1 1x1 conv there,
    with the same outputs and gradients as the channels-first strided conv."""
    import copy

    from blendseg.modeling.core.layers import Conv2dNorm

    conv = Conv2dNorm(8, 16, 1, stride=2, bias=False, norm=torch.nn.BatchNorm2d(16))
    x = torch.randn(2, 8, 64, 64)
    grad = torch.randn(2, 16, 32, 32)
    runs = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        m = copy.deepcopy(conv).to(memory_format=fmt)
        xi = x.clone().contiguous(memory_format=fmt).requires_grad_()
        y = m(xi)
        y.backward(grad.contiguous(memory_format=fmt))
        runs.append((y.detach(), xi.grad, m.weight.grad))
    for a, b in zip(*runs):  # fp32 sums in another order (the weight gradient: 2048 terms through BN's backward)
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))


def test_accumulated_micro_batches_give_the_mean_of_their_gradients(synth_data):
    """``solver.accumulate``: one step over two micro-batches adds half of each one's gradient (the optimiser moves
    once, with lr 0 here so the gradients stay to be read) and logs the mean of their losses."""
    import copy

    from blendseg.engine.train import build_optimizer, train_step

    cfg, model, (images, targets) = setup("meinst_tiny_test", synth_data, channels_last=False, amp=False, base_lr=0.0,
                                          optimizer="sgd", accumulate=2)  # fmt: skip
    halves = [(type(images)(images.tensor[i : i + 2], images.image_sizes[i : i + 2]), targets[i : i + 2])
              for i in (0, 2)]  # fmt: skip
    want, losses = {}, []
    manual = copy.deepcopy(model)  # buffers updated by a training forward (FCOS's moving positive count) as they were
    torch.manual_seed(1)  # MEInst jitters its targets (the reference's inverse sigmoid)
    for part in halves:
        manual.zero_grad()
        out = manual(*part).losses
        losses.append(float(sum(out.values()).detach()))
        sum(out.values()).backward()
        for k, p in manual.named_parameters():
            if p.grad is not None:
                want[k] = want.get(k, 0) + p.grad / 2
    optimizer = build_optimizer(model, cfg.solver)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    torch.manual_seed(1)
    values = train_step(model, optimizer, scaler, halves, cfg.solver, torch.device("cpu"), 0)
    assert values["loss"] == pytest.approx(sum(losses) / 2, rel=1e-5)
    got = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert set(got) == set(want) and len(got) > 20
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-7)


def test_accumulation_splits_each_processes_share_into_micro_batches():
    from blendseg.config import ConfigError, SolverConfig
    from blendseg.engine.train import micro_batch

    assert micro_batch(SolverConfig(ims_per_batch=16, accumulate=4), 2) == 2  # 8 a process, in 4 passes of 2
    assert micro_batch(SolverConfig(ims_per_batch=16), 8) == 2
    with pytest.raises(ConfigError, match="solver.accumulate=3 must be >= 1 and divide each process's 8 images"):
        micro_batch(SolverConfig(ims_per_batch=16, accumulate=3), 2)


def test_a_run_with_accumulation_takes_its_micro_batches_from_the_loader(tmp_path, synth_data):
    """``solver.accumulate=2`` at 4 images a step: the loader gives batches of 2, an iteration takes two of them,
    the epoch's position advances by two and the schedule counts optimiser steps."""
    from blendseg.engine.checkpoint import load_checkpoint
    from blendseg.engine.runner import train
    from blendseg.overrides import apply_overrides

    cfg = apply_overrides(get_preset("fcos_tiny_test"), ["solver.ims_per_batch=4", "solver.accumulate=2",
                          "solver.max_iter=3", "solver.checkpoint_period=0", "data.num_workers=0",
                          "data.aspect_ratio_grouping=false"])  # fmt: skip
    train(cfg, str(synth_data), tmp_path, evaluate=False)
    ckpt = load_checkpoint(tmp_path / "weights" / "last.pt")
    assert ckpt["iteration"] == 3 and ckpt["epoch_batch"] == 6  # 6 micro-batches of 2 from the epoch's 12
