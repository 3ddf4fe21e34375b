"""`python tools/parity.py FIXTURE_DIR` on the shared BlendMask fixture: passes as is, fails on a perturbed copy."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from .conftest import reference_dir

TOOL = Path(__file__).resolve().parents[1] / "tools" / "parity.py"


def _run(fixture: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), str(fixture)], capture_output=True, text=True, timeout=300)


def test_parity_command_passes_and_can_fail(tmp_path):
    fixture = reference_dir("blendmask_r18_tiny")
    r = _run(fixture)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "PARITY OK" in r.stdout and "final_masks" in r.stdout and "NOT PRODUCED" not in r.stdout
    bad = tmp_path / "bad"
    shutil.copytree(fixture, bad)
    outs = dict(np.load(bad / "outputs.npz"))
    outs["det_mask_logits"] = outs["det_mask_logits"] + 0.01 * np.abs(outs["det_mask_logits"]).max()
    np.savez(bad / "outputs.npz", **outs)
    r = _run(bad)
    assert r.returncode == 1 and "det_mask_logits              BAD" in r.stdout
