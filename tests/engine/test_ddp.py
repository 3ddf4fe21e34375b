"""Two processes (gloo, CPU) at 2 images each train as one process at 4 images: the positive-count normalisers are
reduced over processes as the reference does, SyncBN sees the 4 images, DDP averages the gradients."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blendseg.engine.checkpoint import load_checkpoint


def _run(args: list[str], procs: int) -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    launcher = ["-m", "torch.distributed.run", "--nproc_per_node", str(procs), "--master_port", "29517"]
    cmd = [sys.executable, *(launcher if procs > 1 else []), "-m", "blendseg.cli", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _first_losses(out: Path) -> dict:
    return next(json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines() if "loss" in line)


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_images(tmp_path):
    """Every image 128 x 128 so that no batch pads (padding changes per-batch means: the basis semantic loss is a mean
    over the padded batch, as in the reference), and SyncBN for the BN layers ("BN" is per process, as detectron2's:
    2 images' statistics instead of 4). On CPU SyncBN is :class:`AllReduceBatchNorm2d` (PyTorch's is CUDA-only).
    The basis module's semantic loss is off: the reference's seg_head has plain BN, per process by design (with it
    on, that loss differs by 0.2 % and AdamW spreads the difference to every weight)."""
    from blendseg.data.synth import synthesize

    data = synthesize(tmp_path / "data", train=8, val=2, seed=5, min_size=128, max_size=128)
    common = ["train", "blendmask_tiny_test", str(data), "--no-eval", "data.num_workers=0", "solver.max_iter=3",
              "solver.checkpoint_period=0", "data.min_size_train=[128]", "data.max_size_train=128",
              "model.backbone.norm=SyncBN", "model.blendmask.basis_norm=SyncBN",
              "model.blendmask.basis_loss_on=false", "solver.reference_batch=0",
              # fp32 NCHW: oneDNN's channels-last convolutions round a batch of 4 otherwise than two of 2, and the
              # first AdamW steps turn that into +-lr on near-zero gradients (2e-3 after 3 steps: the same gap as
              # between one process in channels-last and in NCHW; two channels-last processes match NCHW to 6e-6)
              "solver.channels_last=false"]  # fmt: skip
    _run([*common, "--out", str(tmp_path / "one"), "solver.ims_per_batch=4"], 1)
    _run([*common, "--out", str(tmp_path / "two"), "solver.ims_per_batch=4"], 2)  # the same batch, 2 each
    one, two = _first_losses(tmp_path / "one"), _first_losses(tmp_path / "two")
    assert one["iteration"] == two["iteration"] == 1
    for k in one:
        if k.startswith("loss_") and k != "loss_basis_sem":
            assert two[k] == pytest.approx(one[k], rel=1e-4, abs=1e-5), k
    a = load_checkpoint(tmp_path / "one" / "weights" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "two" / "weights" / "last.pt")["model"]
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point())
    assert worst < 1e-3, f"weights differ by {worst} after 3 iterations"


@pytest.mark.slow
def test_a_panoptic_model_trains_under_ddp_on_instances_alone(tmp_path):
    """data.with_panoptic=false: the panoptic head gets no loss; it is frozen and not run, so DDP (which errors at
    the second iteration on parameters without gradients) trains the rest."""
    from blendseg.data.synth import synthesize

    data = synthesize(tmp_path / "data", train=8, val=2, seed=5, min_size=96, max_size=128, panoptic=True)
    out = tmp_path / "run"
    _run(["train", "blendmask_panoptic_tiny_test", str(data), "--no-eval", "--out", str(out), "data.num_workers=0",
          "solver.max_iter=3", "solver.ims_per_batch=4", "solver.checkpoint_period=0", "data.with_panoptic=false"],
         2)  # fmt: skip
    assert load_checkpoint(out / "weights" / "last.pt")["iteration"] == 3


@pytest.mark.slow
def test_grouped_batches_resume_exactly_on_two_processes(tmp_path):
    """With aspect-ratio grouping each rank's epoch has its own number of batches, so each rank resumes at its own
    place in its data (not rank 0's): stopped at 3 and resumed, the run ends bitwise where the uninterrupted one
    does."""
    import torch

    from blendseg.data.synth import synthesize

    # both orientations; seed 8: the ranks' first epochs hold 3 and 2 batches of 2
    data = synthesize(tmp_path / "data", train=12, val=0, seed=8, min_size=96, max_size=160)
    common = ["train", "fcos_tiny_test", str(data), "--no-eval", "data.num_workers=0", "solver.checkpoint_period=3",
              "solver.ims_per_batch=4", "data.aspect_ratio_grouping=true"]  # fmt: skip
    _run([*common, "--out", str(tmp_path / "a"), "solver.max_iter=8"], 2)
    _run([*common, "--out", str(tmp_path / "c"), "solver.max_iter=3"], 2)
    places = load_checkpoint(tmp_path / "c" / "weights" / "last.pt")["data_places"]
    assert len(places) == 2
    _run([*common, "--out", str(tmp_path / "c"), "solver.max_iter=8", "--resume"], 2)
    a, c = (load_checkpoint(tmp_path / n / "weights" / "last.pt")["model"] for n in "ac")
    for k in a:
        assert torch.equal(a[k], c[k]), f"{k}: the resumed run differs from the uninterrupted one ({places})"
