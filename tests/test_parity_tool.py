"""`python tools/parity.py FIXTURE_DIR` on every shared reference fixture (AdelaiDet BlendMask on ResNet and DLA-34,
panoptic BlendMask and MEInst, dbolya/yolact YOLACT on ResNet and DarkNet-53, YOLACT++): passes as is, fails on a
perturbed copy."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import reference_dir

TOOL = Path(__file__).resolve().parents[1] / "tools" / "parity.py"
# each case runs the tool in a subprocess (4-17 s); BlendMask and the ops are compared in process (tests/convert, ops)
pytestmark = pytest.mark.slow


def _run(fixture: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), str(fixture)], capture_output=True, text=True, timeout=300)


def _shift_mask_logits(outs: dict) -> str:
    outs["det_mask_logits"] = outs["det_mask_logits"] + 0.01 * np.abs(outs["det_mask_logits"]).max()
    return "det_mask_logits"


def _merge_segments(outs: dict) -> str:
    pan = outs["panoptic_seg"]
    outs["panoptic_seg"] = np.where(pan == 1, 2, pan).astype(pan.dtype)  # segment 1 drawn as segment 2: must fail
    return "panoptic_seg"


def _reverse_classes(outs: dict) -> str:
    outs["classes"] = outs["classes"][::-1].copy()  # same classes, another order: must fail
    return "classes"


@pytest.mark.parametrize(
    ("name", "final_masks", "perturb"),
    [
        ("blendmask_r18_tiny", "final_masks", _shift_mask_logits),
        ("meinst_r18_tiny", "final_masks", _shift_mask_logits),
        ("blendmask_panoptic_tiny", "panoptic_seg", _merge_segments),
        ("yolact_base_tiny", "masks ", _reverse_classes),
        ("yolact_plus_tiny_im400", "masks ", _reverse_classes),
        ("blendmask_dla34_tiny", "final_masks", _shift_mask_logits),
        ("yolact_darknet53_tiny", "masks ", _reverse_classes),
    ],
)
def test_parity_command_passes_and_can_fail(tmp_path, name, final_masks, perturb):
    fixture = reference_dir(name)
    r = _run(fixture)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "PARITY OK" in r.stdout and final_masks in r.stdout and "NOT PRODUCED" not in r.stdout
    bad = tmp_path / "bad"
    shutil.copytree(fixture, bad)
    outs = dict(np.load(bad / "outputs.npz"))
    array = perturb(outs)
    np.savez(bad / "outputs.npz", **outs)
    r = _run(bad)
    assert r.returncode == 1 and f"{array:28s} BAD" in r.stdout


LAZY_PARITY = """
import runpy, sys
import torch._lazy.ts_backend
torch._lazy.ts_backend.init()
sys.argv = ["parity.py", sys.argv[1], "--device", "lazy"]
runpy.run_path({tool!r}, run_name="__main__")
"""


@pytest.mark.parametrize("name", ["blendmask_r18_tiny"])  # YOLACT on the lazy device: 70 s; test_devices runs it
def test_parity_with_the_model_on_another_device(name):
    """``--device``: the same arrays with the model on a device other than the CPU (torch._lazy's TorchScript
    backend stands in for a GPU here: any CPU tensor meeting the model's breaks the run), as tests/cuda runs it."""
    pytest.importorskip("torch._lazy.ts_backend", reason="the stand-in device is torch._lazy's TorchScript backend")
    fixture = reference_dir(name)
    code = LAZY_PARITY.format(tool=str(TOOL))
    r = subprocess.run([sys.executable, "-c", code, str(fixture)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "PARITY OK" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]


# each place a BN sits once: ResNet + bottom module (panoptic), DLA's conv/bn siblings, DarkNet's Sequential,
# ResNet with deformable convs (YOLACT++); blendmask_r18 / meinst_r18 / yolact_base repeat these (all pass fused)
FUSED = ["blendmask_panoptic_tiny", "blendmask_dla34_tiny", "yolact_darknet53_tiny", "yolact_plus_tiny_im400"]


@pytest.mark.parametrize("name", FUSED)
def test_parity_with_batch_norms_fused(name):
    """``predict --fuse`` on the reference fixtures: every batch norm folded into its convolution (ResNet's frozen
    BNs, DLA's, DarkNet's, the bottom module's). Folding reorders float32 products (w * s, then the conv, instead
    of the conv, then * s), so the float arrays get twice the fixtures' tolerance (the panoptic fixture's
    box-tower and bases reach 1.1-1.8x it) and one semantic argmax pixel may flip (the panoptic fixture flips
    one outside its listed ambiguous pixels); classes, counts and kept detections stay exact."""
    fixture = reference_dir(name)
    r = subprocess.run(
        [sys.executable, str(TOOL), str(fixture), "--fuse", "--tol-scale", "2", "--pixel-slack", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    folded = int(r.stdout.split("fused ")[1].split()[0])
    assert folded > 0 and "PARITY OK" in r.stdout
