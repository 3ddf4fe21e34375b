"""The GPU path, run where ``torch.cuda.is_available()`` and skipped elsewhere (the project's CI machines have no
GPU; `pytest tests/cuda` on a GPU machine runs them): training steps with fp16 and bf16 AMP for each method, a
repeatable deterministic run, predict / val / export keeping the model on the GPU with results on the CPU, the
parity fixtures with the model on the GPU, torchvision's CUDA deformable conv against the CPU form, pinned batches,
and two NCCL processes when two GPUs exist."""

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

from ..conftest import random_checkpoint, reference_dir

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: tests/cuda runs on a machine with a GPU"
)

ROOT = Path(__file__).resolve().parents[2]
METHODS = ["blendmask_tiny_test", "yolact_tiny_test", "meinst_tiny_test", "fcos_tiny_test"]
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
    from blendseg.config import apply_overrides
    from blendseg.engine.runner import train
    from blendseg.zoo import get_preset

    base = ["device=cuda", "data.num_workers=0", "solver.ims_per_batch=2", "solver.max_iter=3",
            "solver.checkpoint_period=0"]  # fmt: skip
    cfg = apply_overrides(get_preset(preset), [*base, *overrides])
    return train(cfg, str(data_yaml), out)


def _losses(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if '"loss"' in line]


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
@pytest.mark.parametrize("preset", [*METHODS, "blendmask_panoptic_tiny_test", "yolact_dcn"])
def test_training_steps_with_amp(preset, amp, data, panoptic_data, tmp_path):
    overrides = ["solver.amp=true", f"solver.amp_dtype={amp}"]
    if preset == "yolact_dcn":  # YOLACT++'s modulated DCN backbone: torchvision's CUDA kernel
        preset, overrides = "yolact_tiny_test", [*overrides, *DCN]
    data_yaml = panoptic_data if "panoptic" in preset else data
    metrics = _train(preset, data_yaml, tmp_path / "run", overrides)
    from blendseg.engine.checkpoint import load_checkpoint

    steps = _losses(tmp_path / "run")  # the logged ones
    assert steps and all(math.isfinite(s["loss"]) for s in steps)
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
def test_predict_val_export_keep_the_gpu_and_results_hold_no_gpu_memory(preset, data, tmp_path):
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
    assert len(r) == len(ref)
    torch.testing.assert_close(r.boxes, ref.boxes, atol=0.05, rtol=1e-3)  # cuDNN / TF32 rounding
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


def test_training_batches_are_pinned(data):
    from blendseg.data.loader import build_loader
    from blendseg.engine.runner import build_dataset
    from blendseg.zoo import get_preset

    cfg = get_preset("blendmask_tiny_test")
    ds = build_dataset(cfg, str(data), "train", train=True)
    images, targets = next(iter(build_loader(ds, 2, True, 0, 32, pin_memory=True)))
    assert images.tensor.is_pinned() and targets[0]["boxes"].is_pinned()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="two NCCL processes need two GPUs")
def test_two_nccl_processes_train_and_evaluate(data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
           "-m", "blendseg.cli", "train", "blendmask_tiny_test", str(data), "--out", str(tmp_path / "run"),
           "device=cuda", "data.num_workers=0", "solver.ims_per_batch=4", "solver.max_iter=4",
           "solver.checkpoint_period=2", "model.backbone.norm=SyncBN"]  # fmt: skip
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from blendseg.engine.checkpoint import load_checkpoint

    assert len(load_checkpoint(tmp_path / "run" / "weights" / "last.pt")["rng"]) == 2
