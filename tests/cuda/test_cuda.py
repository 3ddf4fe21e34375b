"""The GPU path, run where ``torch.cuda.is_available()`` and skipped elsewhere (the project's CI machines have no
GPU; `pytest tests/cuda` on a GPU machine runs them): training steps with fp16 and bf16 AMP for each method, a
repeatable deterministic run, predict / val / export keeping the model on the GPU with results on the CPU, the
parity fixtures with the model on the GPU, torchvision's CUDA deformable conv against the CPU form, the runner's
pinned batches, the memory estimate against a measured step, torch's sync detector against the census's ceilings,
and two NCCL processes (resume, time budget) when two GPUs exist."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from blendseg.zoo import suite_presets

from ..conftest import random_checkpoint, reference_dir
from ..engine.test_syncs import CEILINGS
from ..matching import twins

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: tests/cuda runs on a machine with a GPU"
)

ROOT = Path(__file__).resolve().parents[2]
METHODS = suite_presets()
DCN = ["model.backbone.depth=50", "model.backbone.width_per_group=4", "model.backbone.res2_out_channels=16",
       "model.backbone.deform_on_per_stage=[false,true,true,true]", "model.backbone.deform_modulated=true"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from blendseg.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("cuda_data"), train=8, val=4, seed=3, min_size=96, max_size=128)


@pytest.fixture(scope="module")
def panoptic_data(tmp_path_factory) -> Path:
    from blendseg.data.synth import synthesize

    folder = tmp_path_factory.mktemp("cuda_pan")
    return synthesize(folder, train=8, val=4, seed=3, min_size=96, max_size=128, panoptic=True)


def _train(preset: str, data_yaml: Path, out: Path, overrides: list[str]) -> dict:
    from blendseg.engine.runner import train
    from blendseg.overrides import apply_overrides
    from blendseg.zoo import get_preset

    base = ["device=cuda", "data.num_workers=0", "solver.ims_per_batch=2", "solver.max_iter=3",
            "solver.checkpoint_period=0"]  # fmt: skip
    cfg = apply_overrides(get_preset(preset), [*base, *overrides])
    return train(cfg, str(data_yaml), out)


def _losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if '"loss"' in line]


@pytest.fixture
def no_tf32():
    """Comparisons against the CPU in full fp32: Ampere and later GPUs round matmuls and convolutions to TF32 when
    allowed (10 mantissa bits), which moves near-tied scores of an untrained model past each other."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _steps(preset: str, data_yaml: Path, overrides: list[str], steps: int = 3):
    """(the weights that moved, the losses of each step, the dtypes the convolutions returned, the scaler) of
    ``steps`` real training steps on the GPU (:func:`~blendseg.engine.train.train_step`, its autocast and
    scaler), the preset's loader batches of 2."""
    from blendseg.data.loader import build_loader
    from blendseg.engine.runner import build_dataset, with_num_classes
    from blendseg.engine.train import amp_dtype, build_optimizer, prepare_model, train_step
    from blendseg.overrides import apply_overrides
    from blendseg.zoo import build_model, get_preset

    device = torch.device("cuda")
    cfg = apply_overrides(get_preset(preset), ["data.num_workers=0", *overrides])
    ds = build_dataset(cfg, str(data_yaml), "train", train=True)
    cfg = with_num_classes(cfg, ds)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    if hasattr(model, "prepare"):
        model.prepare(ds, log=lambda *_: None)
    model = prepare_model(model, cfg.solver, device).train()
    optimizer = build_optimizer(model, cfg.solver)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype(cfg.solver, device) == torch.float16)
    dtypes: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
    initial = {k: p.detach().clone() for k, p in model.named_parameters()}
    losses = []
    for i, batch in zip(range(steps), build_loader(ds, 2, True, 0, cfg.model.size_divisibility, 0)):
        losses.append(train_step(model, optimizer, scaler, [batch], cfg.solver, device, i))
    for h in hooks:
        h.remove()
    moved = [k for k, p in model.named_parameters() if not torch.equal(p.detach(), initial[k])]
    return moved, losses, dtypes, scaler


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
@pytest.mark.parametrize("preset", [*METHODS, "blendmask_panoptic_tiny_test", "yolact_dcn"])
def test_training_steps_with_amp(preset, amp, data, panoptic_data):
    """Autocast seen to run (the convolutions return the AMP dtype), every step's losses finite (the training step
    returns them; a non-finite one would raise), and the weights moved."""
    overrides = ["solver.amp=true", f"solver.amp_dtype={amp}"]
    if preset == "yolact_dcn":  # YOLACT++'s modulated DCN backbone: torchvision's CUDA kernel
        preset, overrides = "yolact_tiny_test", [*overrides, *DCN]
    data_yaml = panoptic_data if "panoptic" in preset else data
    moved, losses, dtypes, scaler = _steps(preset, data_yaml, overrides)
    want = {"fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    assert want in dtypes, f"no convolution ran in {amp}: {dtypes}"
    assert len(losses) == 3 and all(math.isfinite(v) for step in losses for v in step.values())
    # fp16's scaler skips the steps whose gradients overflow while it finds its scale (2^16 at first)
    assert moved or (amp == "fp16" and scaler.get_scale() < 2.0**16), "three steps and no weight moved"


def test_a_training_run_with_amp_end_to_end(data, tmp_path):
    metrics = _train("blendmask_tiny_test", data, tmp_path / "run", ["solver.amp=true"])
    from blendseg.engine.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "run" / "weights" / "last.pt")["iteration"] == 3 and "bbox" in metrics


def test_deterministic_runs_repeat_bit_for_bit(data, tmp_path):
    """deterministic=true on CUDA: no op falls back to a non-repeatable kernel (torch warns for each), and two runs
    end with the same weights."""
    from blendseg.engine.checkpoint import load_checkpoint

    before = torch.are_deterministic_algorithms_enabled()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for run in ("a", "b"):
                _train("blendmask_tiny_test", data, tmp_path / run, ["deterministic=true", "seed=1"])
    finally:
        torch.use_deterministic_algorithms(before)
    fallbacks = [str(w.message) for w in caught if "does not have a deterministic implementation" in str(w.message)]
    assert not fallbacks, fallbacks
    a = load_checkpoint(tmp_path / "a" / "weights" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "weights" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("preset", METHODS)
def test_predict_val_export_keep_the_gpu_and_results_hold_no_gpu_memory(preset, data, tmp_path, no_tf32):
    import blendseg

    ckpt = random_checkpoint(tmp_path / f"{preset}.pt", preset)
    gpu, cpu = blendseg.load(ckpt, device="cuda"), blendseg.load(ckpt, device="cpu")
    assert gpu.device.type == "cuda"
    images = [torch.randint(0, 256, (96, 128, 3), dtype=torch.uint8).numpy() for _ in range(4)]
    gpu.predict(images[:1])  # warm-up: allocator and cuDNN workspaces
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated()
    results = gpu.predict(images * 5, conf=0.05)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= held + 2**20, "results keep GPU memory"
    assert gpu.device.type == "cuda"
    r = results[0]
    assert r.boxes.device.type == "cpu"
    if r.compact_masks is not None:
        assert all(t.device.type == "cpu" for t in vars(r.compact_masks).values() if torch.is_tensor(t))
    ref = cpu.predict(images[0], conf=0.05)[0]
    for a, b in ((r, ref), (ref, r)):  # every confident detection has its twin on the other device (no counting)
        pairs = twins(a, b)
        assert all(iou > 0.95 for _, _, iou in pairs), pairs
    assert "bbox" in gpu.val(data) and gpu.device.type == "cuda"
    pytest.importorskip("onnxscript")
    gpu.export(out=tmp_path / "m.onnx")
    assert gpu.device.type == "cuda"


PARITY = ["blendmask_r18_tiny", "meinst_r18_tiny", "blendmask_panoptic_tiny", "yolact_base_tiny",
          "yolact_plus_tiny_im400", "blendmask_dla34_tiny", "yolact_darknet53_tiny"]  # fmt: skip


@pytest.mark.parametrize("name", PARITY)
def test_parity_on_the_gpu(name):
    """The reference fixtures with the model on the GPU, TF32 off: float arrays within 10x the CPU tolerances
    (cuDNN's convolutions sum in another order than the CPU's, so the last bits differ and grow through ~20 layers);
    integer arrays, final masks outside the ambiguous pixels and pixel budgets as on the CPU."""
    fixture = reference_dir(name)
    cmd = [sys.executable, str(ROOT / "tools" / "parity.py"), str(fixture), "--device", "cuda", "--tol-scale", "10"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "PARITY OK" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_torchvisions_cuda_deform_conv_is_the_cpu_form():
    import torchvision

    from blendseg.modeling.core.layers import deform_conv2d_fp32
    from blendseg.ops.deform import deform_conv2d

    torch.manual_seed(0)
    x, offset = torch.randn(2, 8, 20, 24), 3 * torch.randn(2, 18, 20, 24)
    weight, mask = torch.randn(16, 8, 3, 3), torch.rand(2, 9, 20, 24)
    cpu = deform_conv2d(x, offset, weight, None, 1, 1, 1, mask)
    gpu = deform_conv2d_fp32(*(t.cuda() for t in (x, offset, weight)), None, 1, 1, 1, mask.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
    direct = torchvision.ops.deform_conv2d(*(t.cuda() for t in (x, offset, weight)), None, 1, 1, 1, mask.cuda())
    assert torch.equal(gpu, direct)  # the model's entry point is torchvision's kernel on CUDA


def test_the_runner_trains_on_pinned_batches(data, tmp_path, monkeypatch):
    """``blendseg train ... device=cuda``: the batches reaching the training step are in page-locked memory (the
    runner asks its loader for them), so their copies to the GPU do not wait."""
    from blendseg.engine import fit as bfit

    pinned = []
    real = bfit.train_step

    def step(model, optimizer, scaler, batches, *args, **kwargs):
        pinned.extend(images.tensor.is_pinned() and targets[0]["boxes"].is_pinned() for images, targets in batches)
        return real(model, optimizer, scaler, batches, *args, **kwargs)

    monkeypatch.setattr(bfit, "train_step", step)
    _train("blendmask_tiny_test", data, tmp_path / "run", ["data.num_workers=1"])
    assert len(pinned) == 3 and all(pinned)


def test_the_memory_estimate_bounds_a_real_step(data):
    """The estimate printed before training on CUDA (engine/memory.py) against the measured peak of a real
    training step of 2 images of the probe's size."""
    from blendseg.engine.memory import estimate_memory
    from blendseg.overrides import apply_overrides
    from blendseg.zoo import build_model, get_preset

    device = torch.device("cuda")
    cfg = apply_overrides(get_preset("blendmask_tiny_test"), ["data.min_size_train=[256]", "data.max_size_train=320"])
    model = build_model(cfg.model).to(device).train()
    est = estimate_memory(model, cfg, device)
    assert est is not None and est.per_image > 0 and est.fixed > 0 and est.total > 0
    assert all(p.grad is None for p in model.parameters())
    torch.cuda.reset_peak_memory_stats(device)
    from blendseg.engine.memory import probe_targets
    from blendseg.structures import ImageBatch

    images = ImageBatch(torch.zeros(2, 3, *est.size, dtype=torch.uint8, device=device), [est.size] * 2)
    sum(model(images, probe_targets(2, est.size, device)).losses.values()).backward()
    measured = torch.cuda.max_memory_allocated(device)
    assert 0.8 * measured <= est.peak(2) - est.optimizer <= 1.2 * measured


@pytest.mark.parametrize("preset,overrides,ceiling", CEILINGS)
def test_a_training_step_syncs_no_more_than_the_census_says(preset, overrides, ceiling, data):
    """torch's own sync detector (``torch.cuda.set_sync_debug_mode``) over real steps: each synchronising call warns;
    no more of them a step than the CPU census's ceiling (tests/engine/test_syncs.py)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _, losses, _, _ = _steps(preset, data, list(overrides), steps=3)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchronizing" in str(w.message)]
    # the first step also fits the optimiser's state and the loader's first batch: leave it out by averaging
    assert len(losses) == 3 and len(syncs) / 3 <= ceiling + 1, syncs[:20]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two NCCL processes need two GPUs")
def test_two_nccl_processes_train_evaluate_resume_and_keep_a_budget(data, tmp_path):
    """Two processes on NCCL: grouped batches, SyncBN, evaluation, a checkpoint with both ranks' generators; then a
    resume that goes on from the saved iteration; then a run bounded by a time budget alone."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = tmp_path / "run"

    def torchrun(*extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
               "-m", "blendseg.cli", "train", "blendmask_tiny_test", str(data), "--out", str(run), "device=cuda",
               "data.num_workers=0", "solver.ims_per_batch=4", "solver.checkpoint_period=2",
               "model.backbone.norm=SyncBN", "data.aspect_ratio_grouping=true", *extra]  # fmt: skip
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r

    from blendseg.engine.checkpoint import load_checkpoint

    torchrun("solver.max_iter=4")
    ckpt = load_checkpoint(run / "weights" / "last.pt")
    assert ckpt["iteration"] == 4 and len(ckpt["rng"]) == 2 and len(ckpt["data_places"]) == 2
    resumed = torchrun("solver.max_iter=6", "--resume", "--no-eval")
    assert "resumed from" in resumed.stdout and "at iteration 4" in resumed.stdout
    assert load_checkpoint(run / "weights" / "last.pt")["iteration"] == 6
    run = tmp_path / "budget"
    torchrun("solver.max_iter=100000", "solver.max_minutes=0.2", "--no-eval")
    done = load_checkpoint(run / "weights" / "last.pt")
    assert 0 < done["iteration"] < 100000 and done["elapsed_s"] >= 12
