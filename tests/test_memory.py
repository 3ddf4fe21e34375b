"""Memory that does not grow with the picture: ``blendseg predict`` on a 12-megapixel photo (dozens of detections:
masks made, drawn and streamed to JSON one instance at a time) costs a few copies of the photo (36 MB each) over
the same command on a VGA photo.

The absolute peak is dominated by importing torch here: the CUDA build of torch 2.14.1 + torchvision alone holds
853 MB resident on this machine (docs/benchmarks/deploy.md), so the test bounds what prediction adds."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(not hasattr(os, "wait4"), reason="peak RSS of a child process via os.wait4")


def _peak_mb(checkpoint, image, out) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "blendseg.cli", "predict", str(checkpoint), str(image), "--out", str(out),
           "--conf", "0", "--save-json"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    assert status == 0
    records = json.loads((out / "predictions.json").read_text())
    return usage.ru_maxrss / 1024, len(records[0]["instances"])  # kilobytes on Linux


@pytest.mark.slow  # a memory bound, not a time one: CPU load does not move it
def test_a_12_megapixel_photo_costs_a_few_copies_of_itself(checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    small.resize((640, 480), Image.BICUBIC).save(tmp_path / "vga.jpg", quality=85)
    small.resize((4032, 3024), Image.BICUBIC).save(tmp_path / "phone.jpg", quality=85)
    base, _ = _peak_mb(checkpoint, tmp_path / "vga.jpg", tmp_path / "a")
    peak, n = _peak_mb(checkpoint, tmp_path / "phone.jpg", tmp_path / "b")
    assert n >= 40 and (tmp_path / "b" / "phone_pred.png").is_file()
    assert peak - base < 160, f"12 MP: {peak:.0f} MB peak, VGA: {base:.0f} MB"  # 160 MB = 4.4 photos
