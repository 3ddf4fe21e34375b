"""Latency of an exported ONNX graph on onnxruntime beside the PyTorch predictor, one process, side by side.

    python -m benchmarks.onnx_latency --out runs/bench_onnx [--presets blendmask_tiny ...] [--size 1080x810] [--runs 7]

For each preset a checkpoint with random weights is written whose class biases are raised so that every image
yields the full 100 detections (benchmarks/common.py's checkpoints, the worst case for masks), exported with
``conf=0.05, max_det=100``, and the predictors are timed on the same photo one after the other, after one warm-up call
each: PyTorch's ``Predictor`` (masks left compact, and with ``Result.masks`` made), onnxruntime's
``OnnxPredictor`` on a ``--dense-masks`` export ((N, H, W) masks inside the graph) and on the default (compact)
(per-box probabilities, pasted per instance as PyTorch does; compact, and with ``.masks`` made). Medians of
``--runs`` calls; threads pinned for both. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import blendseg
from benchmarks.common import checkpoint, median_ms, photo
from blendseg.data.images import read_image
from blendseg.inference.onnx_runtime import OnnxPredictor


def compare(preset: str, image, out: Path, conf: float, runs: int, threads: int, full: bool = False) -> dict:
    """Export ``preset`` (random weights, 100 detections: :func:`~benchmarks.common.checkpoint`, ``full``) twice
    (dense and compact masks) and time PyTorch's predictor and onnxruntime's on ``image``, one after the other.
    Milliseconds."""
    model = blendseg.load(checkpoint(preset, out / f"{preset}.pt", full=full))
    t0 = time.perf_counter()
    onnx_path = model.export(out=out / f"{preset}.onnx", conf=conf, max_det=100, dense_masks=True)
    export_s = time.perf_counter() - t0
    compact_path = model.export(out=out / f"{preset}_compact.onnx", conf=conf, max_det=100, dense_masks=False)
    torch_pred = model.predictor(conf=conf, max_det=100)
    ort_pred = OnnxPredictor(onnx_path, conf=conf, max_det=100, threads=threads)
    ort_compact = OnnxPredictor(compact_path, conf=conf, max_det=100, threads=threads)
    n_torch, n_ort = len(torch_pred(image)), len(ort_pred(image))  # warm-up
    assert len(ort_compact(image).masks) == n_ort
    with torch.inference_mode():
        t_compact = median_ms(lambda: torch_pred(image), runs, warmup=False)
        t_dense = median_ms(lambda: torch_pred(image).masks, runs, warmup=False)
    return {
        "detections": (n_torch, n_ort),
        "torch_compact": t_compact,
        "torch_masks": t_dense,
        "ort_dense_graph": median_ms(lambda: ort_pred(image), runs, warmup=False),
        "ort_compact": median_ms(lambda: ort_compact(image), runs, warmup=False),
        "ort_compact_masks": median_ms(lambda: ort_compact(image).masks, runs, warmup=False),
        "export_s": export_s,
        "size_mb": onnx_path.stat().st_size / 2**20,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/bench_onnx"))
    p.add_argument("--presets", nargs="+", default=["blendmask_tiny", "meinst_tiny", "yolact_tiny"])
    p.add_argument("--size", default="1080x810", help="photo W x H")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--conf", type=float, default=0.05, help="score threshold (exported into the graph)")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(a.threads)
    w, h = (int(v) for v in a.size.split("x"))
    image = read_image(photo(a.out / f"photo_{a.size}.jpg", w, h))
    rows = []
    for preset in a.presets:
        r = compare(preset, image, a.out, a.conf, a.runs, a.threads)
        rows.append(
            f"| {preset} | {a.size} | {r['detections'][0]} / {r['detections'][1]} | {r['torch_compact']:.0f} / "
            f"{r['torch_masks']:.0f} | {r['ort_dense_graph']:.0f} | {r['ort_compact']:.0f} / "
            f"{r['ort_compact_masks']:.0f} | {r['ort_compact'] / r['torch_compact']:.2f} | "
            f"{r['export_s']:.0f} s, {r['size_mb']:.1f} MB |"
        )
        print(rows[-1], flush=True)
    print(
        "\n| preset | photo | detections (torch / ort) | PyTorch ms: compact / + .masks | onnxruntime ms, dense "
        "graph | onnxruntime ms, compact graph: compact / + .masks | ort / torch (compact) | export |"
        "\n|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
