"""Peak memory and time of ``blendseg predict`` on large photos, for the tiny preset of each method.

    python -m benchmarks.predict_memory --out runs/bench_predict [--sizes 1080x810 4032x3024 6000x4000]

For each preset a checkpoint with random weights is written whose class biases are raised so that every image
yields the full 100 detections (the worst case for masks); each (preset, photo) runs ``blendseg predict
--save-json`` in a fresh process, whose peak resident memory (``wait4`` ru_maxrss) and wall time are reported as a
markdown table. ``--blendseg-src DIR`` runs another checkout's ``src`` instead (to measure a version before a
change); ``--onnx dense|compact`` exports each checkpoint and runs ``blendseg predict`` on the ONNX file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import checkpoint, photo

ROOT = Path(__file__).resolve().parents[1]


def run(ckpt: Path, image: Path, out: Path, src: Path) -> tuple[float, float, int]:
    """(peak RSS in MB, wall seconds, detections) of one ``blendseg predict`` process."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "blendseg.cli", "predict", str(ckpt), str(image), "--out", str(out), "--conf", "0"]
    if (src / "blendseg" / "api.py").is_file():
        cmd.append("--save-json")  # older versions always wrote it
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        err = proc.stderr.read().decode()[-500:] if proc.stderr else ""
        return usage.ru_maxrss / 1024, wall, -1 if "Killed" not in err else -2
    import json

    records = json.loads((out / "predictions.json").read_text())
    return usage.ru_maxrss / 1024, wall, len(records[0]["instances"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/bench_predict"))
    p.add_argument("--sizes", nargs="+", default=["1080x810", "4032x3024", "6000x4000"])
    p.add_argument("--presets", nargs="+", default=["blendmask_tiny", "yolact_tiny", "meinst_tiny"])
    p.add_argument("--blendseg-src", type=Path, default=ROOT / "src")
    p.add_argument("--onnx", choices=["dense", "compact"], help="predict with the exported graph instead (onnxruntime)")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for preset in a.presets:
        legacy = not (a.blendseg_src / "blendseg" / "data" / "panoptic.py").is_file()
        ckpt = checkpoint(preset, a.out / f"{preset}.pt", legacy)
        if a.onnx:
            import blendseg

            out = a.out / f"{preset}_{a.onnx}.onnx"
            ckpt = blendseg.load(ckpt).export(out=out, conf=0.0, max_det=100, dense_masks=a.onnx == "dense")
        for size in a.sizes:
            w, h = (int(v) for v in size.split("x"))
            image = a.out / f"photo_{size}.jpg"
            if not image.is_file():
                photo(image, w, h)
            rss, wall, n = run(ckpt, image, a.out / f"pred_{preset}_{size}", a.blendseg_src)
            rows.append(f"| {preset} | {size} ({w * h / 1e6:.1f} MP) | {n} | {rss:.0f} | {wall:.1f} |")
            print(rows[-1], flush=True)
    print("\n| preset | photo | detections | peak RSS (MB) | wall (s) |\n|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
