"""Checkpoints, LR schedule, optimiser groups."""

import dataclasses

import pytest
import torch

from blendseg.config import SolverConfig
from blendseg.engine.checkpoint import load_checkpoint, save_checkpoint
from blendseg.engine.train import build_optimizer, lr_factor


class Evil:
    """A pickled object: weights_only loading must refuse it."""


def test_checkpoint_atomic_and_weights_only(tmp_path):
    model = torch.nn.Conv2d(2, 3, 1)
    path = save_checkpoint(
        tmp_path / "w" / "last.pt", {"model": model.state_dict(), "config": {"a": [1, 2]}, "iteration": 5}
    )
    ck = load_checkpoint(path)
    assert ck["iteration"] == 5 and ck["format_version"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temp file left
    torch.save({"model": {}, "config": {}, "evil": Evil()}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a checkpoint blendseg can read"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")


def test_warmup_multistep_matches_detectron2():
    s = SolverConfig(base_lr=1.0, max_iter=100, steps=(60, 80), warmup_iters=10, warmup_factor=0.001)
    assert lr_factor(0, 0, s) == pytest.approx(0.001)
    assert lr_factor(5, 5, s) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(10, 10, s) == 1.0
    assert lr_factor(59, 59, s) == 1.0 and lr_factor(60, 60, s) == pytest.approx(0.1)
    assert lr_factor(80, 80, s) == pytest.approx(0.01)
    c = dataclasses.replace(s, warmup_method="constant", warmup_factor=1 / 3)
    assert lr_factor(3, 3, c) == pytest.approx(1 / 3) and lr_factor(10, 10, c) == 1.0
    assert lr_factor(20, 75.0, s) == pytest.approx(0.1)  # time-budget progress drives the steps


def test_norm_params_get_their_own_weight_decay():
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.GroupNorm(2, 4), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(m, SolverConfig(weight_decay=1e-4, weight_decay_norm=0.0))
    assert [len(g["params"]) for g in opt.param_groups] == [2, 4]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    assert isinstance(build_optimizer(m, SolverConfig(optimizer="adamw")), torch.optim.AdamW)


class _FailingLoader:
    """One good batch, then a data error: training must save last.pt before the error propagates."""

    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return 10

    def __iter__(self):
        yield self.batch
        raise RuntimeError("corrupt batch")


def test_exception_during_training_saves_last(tmp_path):
    from blendseg.engine.fit import fit
    from blendseg.structures import pad_images
    from blendseg.zoo import build_model, get_preset

    cfg = get_preset("fcos_tiny_test")
    model = build_model(cfg.model)
    batch = (
        pad_images([torch.rand(3, 64, 64) * 255]),
        [{"boxes": torch.tensor([[5.0, 5, 40, 50]]), "labels": torch.tensor([1])}],
    )
    with pytest.raises(RuntimeError, match="corrupt batch"):
        fit(model, _FailingLoader(batch), cfg, tmp_path, torch.device("cpu"))
    ck = load_checkpoint(tmp_path / "weights" / "last.pt")
    assert ck["iteration"] == 1 and "optimizer" in ck
    assert (tmp_path / "train_log.jsonl").read_text().count("iteration") == 1


def test_amp_dtype_by_device():
    from blendseg.engine.train import amp_dtype

    on = dataclasses.replace(SolverConfig(), amp=True)
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert amp_dtype(SolverConfig(), cuda) is None
    assert amp_dtype(on, cuda) == torch.float16 and amp_dtype(on, cpu) == torch.bfloat16  # auto
    assert amp_dtype(dataclasses.replace(on, amp_dtype="bf16"), cuda) == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        amp_dtype(dataclasses.replace(on, amp_dtype="fp16"), cpu)
    with pytest.raises(ValueError, match="auto, fp16 or bf16"):
        amp_dtype(dataclasses.replace(on, amp_dtype="float8"), cuda)
    # a CPU without bf16 instructions trains in fp32 (emulated bf16 is slower); flags unknown: no check
    assert amp_dtype(on, cpu, flags=frozenset({"avx2", "avx512f"})) is None
    assert amp_dtype(on, cpu, flags=frozenset({"avx512f", "avx512_bf16"})) == torch.bfloat16
    assert amp_dtype(on, cuda, flags=frozenset({"avx2"})) == torch.float16


def test_each_rank_restores_its_rng_state_or_keeps_its_seed(capsys):
    """A checkpoint holds one state per rank; a rank beyond the saved states keeps its seed and says so."""
    import random

    from blendseg.engine.train import restore_rng, rng_state

    torch.manual_seed(5)
    random.seed(5)
    saved = rng_state(torch.device("cpu"))
    expected = torch.rand(3)
    restore_rng([saved], torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)
    restore_rng([], torch.device("cpu"))
    assert "keeps its seed" in capsys.readouterr().out


def test_image_batches_pin(monkeypatch):
    """DataLoader(pin_memory=True) pins what has a pin_memory() method: ImageBatch has one (pinning needs a GPU
    machine, so here Tensor.pin_memory is a stand-in that records the call)."""
    from blendseg.structures import pad_images

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a: pinned.append(self) or self.clone())
    batch = pad_images([torch.zeros(3, 20, 30), torch.ones(3, 32, 16)], 32)
    out = batch.pin_memory()
    assert pinned and pinned[0] is batch.tensor and out.image_sizes == batch.image_sizes
    assert torch.equal(out.tensor, batch.tensor) and out.tensor is not batch.tensor


def test_selection_metric_prefers_pq_then_mask_then_box_ap():
    from blendseg.engine.fit import selection_metric

    assert selection_metric({"bbox": {"AP": 3.0}}) == ("bbox/AP", 3.0)
    assert selection_metric({"bbox": {"AP": 3.0}, "segm": {"AP": 2.0}}) == ("segm/AP", 2.0)
    assert selection_metric({"bbox": {"AP": 3.0}, "segm": {"AP": 2.0}, "panoptic": {"PQ": 9.0}}) == ("panoptic/PQ", 9.0)
    assert selection_metric({"skipped_eval_images": ["x"]}) is None and selection_metric({}) is None


def test_patience_stops_early_and_best_pt_names_its_metric(tmp_path, synth_data):
    """Learning rate 0: every evaluation gives the same AP, so the first one is the best and, with patience 2, the
    third ends the run (no final re-evaluation); metrics.json says which metric chose best.pt and when."""
    import json

    from blendseg.engine.runner import train
    from blendseg.overrides import apply_overrides
    from blendseg.zoo import get_preset

    cfg = apply_overrides(get_preset("blendmask_tiny_test"), [
        "data.num_workers=0", "solver.ims_per_batch=2", "solver.max_iter=50", "solver.base_lr=0.0",
        "solver.eval_period=1", "solver.patience=2", "solver.checkpoint_period=0"])  # fmt: skip
    metrics = train(cfg, str(synth_data), tmp_path / "run")
    assert metrics["early_stop"] == {"iteration": 3, "patience": 2}
    assert metrics["best"]["metric"] == "segm/AP" and metrics["best"]["iteration"] == 1
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["best"] == metrics["best"]
    assert load_checkpoint(tmp_path / "run" / "weights" / "best.pt")["iteration"] == 1
    assert load_checkpoint(tmp_path / "run" / "weights" / "last.pt")["iteration"] == 3
    logged = (tmp_path / "run" / "train_log.jsonl").read_text()
    assert logged.count('"eval"') == 3 and "early stop at iteration 3" in logged


def test_loader_workers_leave_the_training_threads_their_cores(monkeypatch, capsys):
    from blendseg.engine.runner import loader_workers

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_workers(1, cpu, cores=2) == 0  # both cores run the step: no worker
    assert "data.num_workers 1 -> 0" in capsys.readouterr().out
    assert loader_workers(4, cpu, cores=4) == 2 and loader_workers(1, cpu, cores=8) == 1
    assert loader_workers(0, cpu, cores=8) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes share the 8 cores
    assert loader_workers(4, cpu, cores=8) == 2
    assert loader_workers(2, torch.device("cuda", 0), cores=1) == 2  # a GPU step leaves the cores to the loader
    assert capsys.readouterr().out.count("->") == 2
