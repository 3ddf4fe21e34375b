"""Videos in and out, frame by frame: predict on a generated clip with flat memory, the CLI's annotated video, the
message when OpenCV is missing."""

import json
import os
import sys

import numpy as np
import pytest

import blendseg
from blendseg.cli import main
from blendseg.predict import PredictionWriter

cv2 = pytest.importorskip("cv2", reason="videos need OpenCV (pip install 'blendseg[video]'; in the dev extra)")


def _clip(path, frames: int, h: int = 96, w: int = 128):
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
    for i in range(frames):
        frame = np.full((h, w, 3), 60, np.uint8)
        cv2.circle(frame, (10 + (i * 3) % (w - 20), h // 2), 12, (40, 200, 240), -1)
        out.write(frame)
    out.release()
    return path


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS read from /proc")
@pytest.mark.slow  # a memory bound, not a time one: CPU load does not move it
def test_300_frames_stream_with_flat_memory(checkpoint, tmp_path):
    clip = _clip(tmp_path / "clip.mp4", 300)
    model = blendseg.load(checkpoint)
    writer = PredictionWriter(tmp_path / "out", model.categories, draw=True, save_json=True)
    rss = {}
    for i, r in enumerate(model.predict(str(clip), conf=0.0, max_det=20, stream=True)):
        assert r.frame == i and r.image_size == (96, 128) and len(r) == 20
        writer.write(r, fps=25.0)
        if i in (30, 299):
            rss[i] = _rss_mb()
    writer.close()
    assert rss[299] - rss[30] < 40, rss  # 270 more frames, drawn and written: no growth beyond noise
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [r["frame"] for r in records] == list(range(300))
    video = cv2.VideoCapture(str(tmp_path / "out" / "clip_pred.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 300
    ok, frame = video.read()
    assert ok and frame.shape == (96, 128, 3)


def test_cli_writes_an_annotated_video(checkpoint, tmp_path, capsys):
    clip = _clip(tmp_path / "c.avi", 12)
    out = tmp_path / "pred"
    assert main(["predict", str(checkpoint), str(clip), "--out", str(out), "--conf", "0", "--save-json"]) == 0
    assert (out / "c_pred.mp4").is_file() and len(json.loads((out / "predictions.json").read_text())) == 12
    assert "12 image(s)" in capsys.readouterr().out


def test_missing_opencv_is_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "cv2", None)
    (tmp_path / "v.mp4").write_bytes(b"")
    with pytest.raises(ImportError, match=r"blendseg\[video\]"):
        list(blendseg.load("blendmask_tiny_test").predict(str(tmp_path / "v.mp4")))
