"""Devices stay where the user put them: ``load(..., device=)`` chooses, predict / predictor / val keep the model
there, export works on a copy, and results come back on the CPU (so a list of them holds no GPU memory).

A device other than the CPU that computes, on a machine without a GPU: torch._lazy's TorchScript backend ("lazy").
Lazy tensors cannot be inference tensors, so that run swaps ``torch.inference_mode`` for ``no_grad`` before
blendseg is imported (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import blendseg
from blendseg.zoo import suite_presets

from .conftest import random_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"

LAZY_RUN = r"""
import json, sys, torch
import torch._lazy.ts_backend
torch._lazy.ts_backend.init()
torch.inference_mode = torch.no_grad  # lazy tensors cannot be inference tensors
import blendseg
from blendseg.structures import LazyMasks

data, checkpoints = sys.argv[1], json.loads(sys.argv[2])
lazy = torch.device("lazy", 0)
image = torch.randint(0, 256, (3, 96, 128), dtype=torch.uint8)
report = {}
for name, path in checkpoints.items():
    m = blendseg.load(path, device="lazy")
    assert m.device == lazy, m.device
    results = m.predict(image.numpy().transpose(1, 2, 0), conf=0.05)
    assert m.device == lazy and all(p.device == lazy for p in m.model.parameters()), "predict moved the model"
    r = results[0]
    tensors = [r.boxes, r.scores, r.labels, *vars(r.detections).values()]
    if isinstance(r.compact_masks, LazyMasks):
        tensors += list(vars(r.compact_masks).values())
    if r.panoptic is not None:
        tensors += [r.panoptic.panoptic_seg, r.panoptic.semantic]
    devices = sorted({str(t.device) for t in tensors if torch.is_tensor(t)})
    metrics = m.val(data)
    assert m.device == lazy, "val moved the model"
    report[name] = {"detections": len(r), "devices": devices, "masks": None if r.masks is None else list(r.masks.shape),
                    "val": sorted(metrics)}
print("REPORT " + json.dumps(report))
"""


@pytest.mark.slow
def test_a_model_on_another_device_stays_there_and_results_come_back_on_the_cpu(tmp_path):
    pytest.importorskip("torch._lazy.ts_backend", reason="the stand-in device is torch._lazy's TorchScript backend")
    from blendseg.data.synth import synthesize

    data = synthesize(tmp_path / "data", train=2, val=2, seed=3, min_size=96, max_size=128, panoptic=True)
    presets = [*suite_presets(), "blendmask_panoptic_tiny_test"]
    ckpts = {p: str(random_checkpoint(tmp_path / f"{p}.pt", p, data)) for p in presets}  # the data's classes
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", LAZY_RUN, str(data), json.dumps(ckpts)], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT ", 1)[1])
    for name in presets:
        assert report[name]["devices"] == ["cpu"], (name, report[name])
        assert "bbox" in report[name]["val"]
    assert report["blendmask_tiny_test"]["detections"] > 0 and report["blendmask_tiny_test"]["masks"][1:] == [96, 128]
    assert "panoptic" in report["blendmask_panoptic_tiny_test"]["val"]


def test_load_chooses_and_predictor_keeps_the_device():
    m = blendseg.load("blendmask_tiny_test", device="meta")
    assert m.device == torch.device("meta")
    predictor = m.predictor(conf=0.5)
    assert predictor.device == torch.device("meta") and m.device == torch.device("meta")
    assert all(p.device.type == "meta" for p in m.model.parameters())
    m = blendseg.load("fcos_tiny_test", device="cpu").to("meta")  # Model.to moves it; then it stays
    assert m.device == torch.device("meta") and m.predictor().device == torch.device("meta")


def test_auto_is_the_cpu_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: auto is the GPU")
    assert blendseg.load("fcos_tiny_test").device == torch.device("cpu")


def test_export_works_on_a_float32_cpu_copy(tmp_path, monkeypatch):
    """The caller's model keeps its dtype and mode; the exporter gets a float32 eval copy (stopped there: the
    exporter itself is tested in tests/export)."""
    pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (pip install 'blendseg[onnx]')")
    import blendseg.export.onnx as onnx_export

    seen = []

    class Stop(Exception):
        pass

    def capture(model, *args, **kwargs):
        seen.append(model)
        raise Stop

    monkeypatch.setattr(onnx_export, "image_graph", capture)
    m = blendseg.load("fcos_tiny_test", device="cpu")
    m.model.double().train()
    with pytest.raises(Stop):
        m.export(out=tmp_path / "fcos.onnx")
    (copy,) = seen
    assert copy is not m.model and not copy.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in copy.parameters())
    assert all(p.dtype == torch.float64 for p in m.model.parameters()) and m.model.training
