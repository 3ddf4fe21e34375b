"""Tracking on the synthetic videos (issue 38): HOTA / IDF1 / MOTA on masks (TrackEval) for BlendMask, YOLACT,
MEInst and torchvision's Mask R-CNN, each with mask-and-box and box-only association; the temporal stability of
their masks (YOLACT++ §7.4: are YOLACT's masks steadier than Mask R-CNN's?); the tracker's cost per frame beside
predict alone.

The detectors are the ones ``benchmarks.accuracy`` trains side by side at an equal CPU budget on the synthetic
shapes (still images); the videos are the same shapes moving (``blendseg data synth --video``), never trained on:

    python -m benchmarks.accuracy --out runs/tracking --minutes 8      # the four detectors, about 40 minutes
    python -m benchmarks.tracking --models runs/tracking               # this, about 10 minutes

Writes tracking.json and tracking.md into --models. Nothing else should run meanwhile (the overhead is a time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks.common import write_markdown
from benchmarks.maskrcnn import TorchvisionMaskRCNN
from blendseg.api import Model, load
from blendseg.config import TrainConfig
from blendseg.data.synth_video import synthesize_video
from blendseg.engine.checkpoint import load_checkpoint
from blendseg.evaluation.tracking import COLUMNS
from blendseg.inference.result import Categories
from blendseg.inference.tracker import ByteTracker
from blendseg.overrides import from_dict

ROWS = ["blendmask_tiny_seed0", "yolact_tiny_seed0", "meinst_tiny_seed0", "maskrcnn_seed0"]


def load_row(models: Path, row: str) -> Model:
    """The model of one run folder of benchmarks.accuracy (``<model>_seed<N>``)."""
    path = models / row / "weights" / "last.pt"
    if not row.startswith("maskrcnn"):
        return load(path, device="cpu")
    ckpt = load_checkpoint(path)
    cfg = from_dict(TrainConfig, ckpt["config"])
    net = TorchvisionMaskRCNN(cfg.model)
    net.load_state_dict(ckpt["model"])
    return Model(net, cfg, Categories.from_checkpoint(ckpt, cfg), str(path))


def overhead(model: Model, frames: Path, conf: float) -> dict:
    """Median ms per frame of predict alone and of track (predict + the tracker), alternating passes."""
    times: dict[str, list[float]] = {"predict": [], "track": []}
    for _ in range(2):
        for key in times:
            t0 = time.perf_counter()
            if key == "predict":
                n = sum(1 for _ in model.predict(frames, conf=conf, stream=True))
            else:
                n = sum(1 for _ in model.track(frames, ByteTracker(), conf=conf, stream=True))
            times[key].append((time.perf_counter() - t0) * 1e3 / n)
    out = {k: round(statistics.median(v), 1) for k, v in times.items()}
    out["tracker_ms"] = round(out["track"] - out["predict"], 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, default=Path("runs/tracking"))
    p.add_argument("--rows", nargs="*", default=ROWS, help="run folders of benchmarks.accuracy in --models")
    p.add_argument("--sequences", type=int, default=4)
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--size", type=int, nargs=2, default=[256, 320], metavar=("H", "W"))
    p.add_argument("--conf", type=float, default=0.1)
    a = p.parse_args()
    torch.manual_seed(0)
    videos = a.models / "videos"
    for k in range(a.sequences):
        if not (videos / f"synth-{k + 1:02d}").is_dir():
            synthesize_video(videos, a.frames, tuple(a.size), objects=8, seed=100 + k, name=f"synth-{k + 1:02d}")
    calm = a.models / "videos-calm"  # no camera shake, most shapes still: their true masks do not change
    for k in range(a.sequences):
        if not (calm / f"calm-{k + 1:02d}").is_dir():
            synthesize_video(calm, a.frames, tuple(a.size), 8, 200 + k, still=0.6, jitter=0.0, name=f"calm-{k + 1:02d}")
    results = {"sequences": a.sequences, "frames": a.frames, "size": a.size, "rows": []}
    for row in a.rows:
        model = load_row(a.models, row)
        rec = {"model": row}
        for assoc, use_masks in (("masks", True), ("boxes", False)):
            m = model.val_track(videos, conf=a.conf, tracker={"use_masks": use_masks})
            rec[assoc] = m["all"]
            rec[f"{assoc}_class_averaged"] = m["class_averaged"]
            rec.setdefault("moving", m["stability"])
        rec["stability"] = model.val_track(calm, conf=a.conf)["stability"]
        rec["overhead"] = overhead(model, videos / "synth-01" / "img1", a.conf)
        results["rows"].append(rec)
        print(json.dumps(rec))
        (a.models / "tracking.json").write_text(json.dumps(results, indent=2))
    md = [f"{a.sequences} sequences x {a.frames} frames of {a.size[1]}x{a.size[0]}, conf {a.conf}", ""]
    md += ["| model | association | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
    for r in results["rows"]:
        for assoc in ("masks", "boxes"):
            md.append(f"| {r['model']} | {assoc} | " + " | ".join(f"{r[assoc][c]:g}" for c in COLUMNS) + " |")
    head = "| model | still: mask IoU frame to frame (pairs) | moving: abs(pred - true change) (pairs) | predict ms"
    md += ["", head + " | track ms | tracker ms |", "|---" * 6 + "|"]
    for r in results["rows"]:
        s, m, o = r["stability"], r["moving"], r["overhead"]
        md.append(
            f"| {r['model']} | {s['still']:.3f} ({s['still_pairs']}) | {m['change_error']:.3f} ({m['moving_pairs']}) "
            f"| {o['predict']} | {o['track']} | {o['tracker_ms']} |"
        )
    write_markdown(a.models / "tracking.md", md)


if __name__ == "__main__":
    main()
