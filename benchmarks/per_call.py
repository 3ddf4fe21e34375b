"""Benchmark (not a test): one ``Model.predict(image)`` call per image against one predictor streaming over them.

    python -m benchmarks.per_call [--preset blendmask_tiny] [--size 250] [--images 20] [--rounds 3]

A loop of one-image calls is how many users predict. The model keeps its predictor between calls (for ``.onnx``
an onnxruntime session, for ``.xml`` an OpenVINO compilation) and makes it again only when the settings change;
the "made each call" row drops it before every call, as blendseg did before issue 37. For ``.pt``, ``.onnx`` and
``.xml`` of the preset (random weights whose scores clear the threshold: ``benchmarks/common.py``): ms an image
for ``--images`` synthetic scenes of ``--size`` px, medians of ``--rounds``, 2 threads.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import blendseg
from benchmarks.common import checkpoint, photo


def timed(fn, images: list[np.ndarray]) -> float:
    t0 = time.perf_counter()
    fn(images)
    return (time.perf_counter() - t0) * 1e3 / len(images)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="blendmask_tiny")
    p.add_argument("--size", type=int, default=250)
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = [np.asarray(Image.open(photo(tmp / f"{i}.jpg", a.size, a.size, seed=i))) for i in range(a.images)]
        ckpt = checkpoint(a.preset, tmp / "model.pt")
        files = {".pt": ckpt, ".onnx": blendseg.load(ckpt, device="cpu").export(out=tmp / "model.onnx")}
        try:
            files[".xml"] = blendseg.load(ckpt, device="cpu").export(format="openvino", out=tmp / "model.xml")
        except ImportError:
            print("OpenVINO is not installed: no .xml row")
        models = {k: blendseg.load(f, device="cpu") for k, f in files.items()}

        def per_call(model):
            return lambda ims: [model.predict(im) for im in ims]

        def made_each_call(model):
            def run(ims):
                for im in ims:
                    model._predictor = None  # what every call did before issue 37
                    model.predict(im)

            return run

        def stream(model):
            return lambda ims: list(model.predict(ims, stream=True))

        ways = {"per call": per_call, "made each call": made_each_call, "stream": stream}
        times: dict[tuple[str, str], list[float]] = {}
        for model in models.values():  # warm-up: the first session and the allocator
            model.predict(images[0])
        for _ in range(a.rounds):
            for suffix, model in models.items():
                for way, make in ways.items():
                    times.setdefault((suffix, way), []).append(timed(make(model), images))
    print(f"\n{a.preset}, {a.images} images of {a.size} px, ms an image (median of {a.rounds})\n")
    print("| file | per call | made each call (before) | stream | per call / stream |\n|---|---|---|---|---|")
    for suffix in models:
        ms = {way: statistics.median(times[(suffix, way)]) for way in ways}
        row = f"| {suffix} | {ms['per call']:.1f} | {ms['made each call']:.1f} | {ms['stream']:.1f}"
        print(f"{row} | {ms['per call'] / ms['stream']:.2f} |")


if __name__ == "__main__":
    main()
