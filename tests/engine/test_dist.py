"""Processes and devices: every collective on the backend's device (two processes under NCCL's rules on Gloo, see
nccl_standin.py), evaluation gathered to rank 0, each rank's own RNG state across a resume, each rank on its own
GPU, and no collective outside blendseg/dist.py."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blendseg import dist as bdist
from blendseg.dist import process_device
from blendseg.engine.checkpoint import load_checkpoint

SRC = Path(__file__).resolve().parents[2] / "src"
STANDIN = Path(__file__).with_name("nccl_standin.py")


def test_cuda_n_under_torchrun_is_each_ranks_own_gpu():
    cuda = torch.device
    with pytest.warns(UserWarning, match="CUDA_VISIBLE_DEVICES"):
        assert process_device(cuda("cuda:3"), local_rank=0, world_size=4) == cuda("cuda", 0)
    assert process_device(cuda("cuda:3"), local_rank=2, world_size=4) == cuda("cuda", 2)
    assert process_device(cuda("cuda"), local_rank=1, world_size=2) == cuda("cuda", 1)
    assert process_device(cuda("cuda:3"), local_rank=0, world_size=1) == cuda("cuda", 3)  # one process: as given
    assert process_device(cuda("cuda"), local_rank=0, world_size=1) == cuda("cuda", 0)
    assert process_device(cuda("cpu"), local_rank=1, world_size=2) == cuda("cpu")


def test_comm_device_follows_the_backend(monkeypatch):
    assert bdist.comm_device() == torch.device("cpu")  # no process group
    monkeypatch.setattr(bdist, "backend", lambda: "nccl")
    monkeypatch.setattr(bdist, "_current_cuda_device", lambda: torch.device("meta"))
    assert bdist.comm_device() == torch.device("meta")
    monkeypatch.setattr(bdist, "backend", lambda: "gloo")
    assert bdist.comm_device() == torch.device("cpu")


def test_one_process_reductions_are_the_identity():
    t = torch.tensor([1.0, 2.0])
    assert bdist.all_reduce(t) is t and bdist.reduce_mean(t) is t
    assert bdist.agree(3.5, "min") == 3.5 and bdist.agree(2.0, "mean") == 2.0
    assert bdist.gather_objects({"a": 1}) == [{"a": 1}]


def test_no_collective_outside_dist():
    """Collectives called anywhere else would bypass the device rule (the bug this file's stand-in test caught)."""
    pattern = re.compile(
        r"\b(?:dist|distributed)\.(all_reduce|all_gather\w*|gather\w*|broadcast\w*|reduce\w*|scatter\w*|all_to_all\w*)\("
    )
    offenders = []
    for path in (SRC / "blendseg").rglob("*.py"):
        if path.relative_to(SRC).as_posix() == "blendseg/dist.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert not offenders, "collectives outside blendseg/dist.py:\n" + "\n".join(offenders)


def _torchrun(args: list[str], port: int, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port)]
    done = subprocess.run([*cmd, str(STANDIN), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _sha1(t: torch.Tensor) -> str:
    return hashlib.sha1(t.numpy().tobytes()).hexdigest()


@pytest.mark.slow
def test_two_processes_under_nccl_rules_train_evaluate_and_resume_each_ranks_rng(tmp_path):
    """A time-budgeted run (the elapsed time is reduced every step), the finite-loss and stop-signal checks, the
    logged-loss means (host numbers, over the Gloo group), COCO evaluation at the end, then a resume: under the
    stand-in every tensor collective of the default group must be on the (stand-in) GPU and objects gathered to
    rank 0 over Gloo. The checkpoint holds both ranks' generators (seeded seed + rank, so they differ) and each rank
    restores its own, rank 1 without seeing the run folder (rank 0 reads the checkpoint and broadcasts it)."""
    pytest.importorskip("torch._lazy.ts_backend", reason="the NCCL stand-in needs torch._lazy's TorchScript backend")
    from blendseg.data.synth import synthesize

    data = synthesize(tmp_path / "data", train=8, val=4, seed=5, min_size=96, max_size=128)
    run, logs = tmp_path / "run", tmp_path / "rng"
    logs.mkdir()
    common = ["train", "blendmask_tiny_test", str(data), "--out", str(run), "device=cpu", "data.num_workers=0",
              "solver.ims_per_batch=4", "solver.checkpoint_period=2", "solver.max_iter=100"]  # fmt: skip
    first = _torchrun([*common, "solver.max_minutes=0.05"], 29531)
    for rank in (0, 1):
        line = re.search(
            rf"standin rank {rank}: (\d+) tensor collectives on lazy:0, (\d+) on the host, (\d+) object collectives",
            first.stdout,
        )
        assert line and int(line[1]) > 0, first.stdout[-2000:]  # FCOS's normalisers, the gradients
        assert int(line[2]) > 0, "the logged losses, the time budget and the stop signals agree on the host"
        assert int(line[3]) > 0, "the evaluation gathers its results to rank 0"
    assert first.stdout.count("inference on 2 images") == 2  # each rank its half of the 4 val images
    assert "segm" in json.loads((run / "metrics.json").read_text())  # rank 0 scored them
    ckpt = load_checkpoint(run / "weights" / "last.pt")
    saved, load_it = ckpt["rng"], ckpt["iteration"]
    assert isinstance(saved, list) and len(saved) == 2
    assert _sha1(saved[0]["torch"]) != _sha1(saved[1]["torch"])
    # rank 1 as on another node, without the run folder: rank 0 reads the checkpoint and sends it
    hide = {"BLENDSEG_RNG_LOG": str(logs), "BLENDSEG_HIDE_RUN": str(run)}
    resumed = _torchrun([*common, "--resume", "solver.max_minutes=0.1", "--no-eval"], 29532, hide)
    assert f"resumed from {run / 'weights' / 'last.pt'} at iteration {load_it}" in resumed.stdout
    for rank in (0, 1):
        restored = (logs / f"rank{rank}.txt").read_text().split()
        assert restored == [_sha1(saved[rank]["torch"])], f"rank {rank} restored another rank's generator"


def test_the_process_group_waits_as_long_as_the_config_says(monkeypatch):
    """dist_timeout_minutes reaches init_process_group (NCCL's default 10 minutes is shorter than rank 0's evaluation
    on a large val set) and the Gloo group for objects."""
    import datetime

    import torch.distributed as tdist

    from blendseg.config import TrainConfig

    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(tdist, "init_process_group", lambda **kw: seen.update(kw))
    monkeypatch.setattr(tdist, "get_rank", lambda *a: 1)
    monkeypatch.setattr(bdist, "_timeout", None)  # restored after the test
    assert bdist.init_from_env("cpu", 45) == (1, 0)
    assert seen == {"backend": "gloo", "timeout": datetime.timedelta(minutes=45)} and bdist._timeout == seen["timeout"]
    assert TrainConfig().dist_timeout_minutes == 60
