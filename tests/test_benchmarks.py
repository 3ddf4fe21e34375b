"""The benchmarks (not tests themselves) stay runnable: every module under ``benchmarks/`` imports, its siblings
through the package, and ``python -m benchmarks.NAME --help`` runs from the checkout's root."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")


def test_the_benchmarks_folder_holds_every_benchmark():
    assert {"common", "speed", "accuracy", "deploy", "train_step", "fcos_budget", "predict_memory"} <= set(NAMES)
    assert not list((ROOT / "tools").glob("bench_*.py"))


@pytest.mark.parametrize("name", NAMES)
def test_a_benchmark_module_imports(name):
    source = (ROOT / "benchmarks" / f"{name}.py").read_text()
    assert "sys.path" not in source, "import siblings as benchmarks.NAME"
    importlib.import_module(f"benchmarks.{name}")


@pytest.mark.slow  # a subprocess
def test_a_benchmark_runs_as_a_module_from_the_checkout():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.forward", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Forward-pass time of presets" in out.stdout
