"""bf16 against fp32 inference, side by side in one process: speed of the predictor on a photo (random weights,
benchmarks/common.py's checkpoints: up to 100 detections), the network's images/s at several batch sizes, and
mask / box AP of trained checkpoints.

    python -m benchmarks.precision --presets blendmask_r50_1x --size 1216x800 \
        --checkpoints runs/demo/run/weights/last.pt --data runs/demo/data/data.yaml

Prints two markdown tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import blendseg
from benchmarks.common import checkpoint, median_ms, photo
from blendseg.data.images import read_image
from blendseg.inference.precision import autocast, to_float32
from blendseg.inference.predictor import resize_for_test
from blendseg.structures import pad_images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/bench_precision"))
    p.add_argument("--presets", nargs="*", default=["blendmask_r50_1x"])
    p.add_argument("--size", default="1216x800", help="photo W x H")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--checkpoints", nargs="*", default=[])
    p.add_argument("--data", help="data.yaml for the AP of --checkpoints")
    p.add_argument("--batch-presets", nargs="*", default=[], help="images/s of the network at --batch-sizes")
    p.add_argument("--batch-sizes", nargs="*", type=int, default=[1, 4, 8])
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(a.threads)
    w, h = (int(v) for v in a.size.split("x"))
    image = read_image(photo(a.out / f"photo_{a.size}.jpg", w, h))
    print("| preset | photo | fp32 ms | bf16 ms | speed-up | detections fp32 / bf16 |\n|---|---|---|---|---|---|")
    for preset in a.presets:
        model = blendseg.load(checkpoint(preset, a.out / f"{preset}.pt"))
        preds = {prec: model.predictor(conf=0.05, max_det=100, precision=prec) for prec in ("fp32", "bf16")}
        with torch.inference_mode():
            ms = {prec: median_ms(lambda pr=pr: pr(image), a.runs) for prec, pr in preds.items()}
            n = {prec: len(pr(image)) for prec, pr in preds.items()}
        print(
            f"| {preset} | {a.size} | {ms['fp32']:.0f} | {ms['bf16']:.0f} | {ms['fp32'] / ms['bf16']:.2f}x | "
            f"{n['fp32']} / {n['bf16']} |",
            flush=True,
        )
    if a.batch_presets:
        print("\n| preset | batch | fp32 images/s | bf16 images/s |\n|---|---|---|---|")
    for preset in a.batch_presets:
        model = blendseg.load(checkpoint(preset, a.out / f"{preset}.pt"))
        x = resize_for_test(model.cfg, image).float()
        for bs in a.batch_sizes:
            batch = pad_images([x] * bs, model.cfg.model.size_divisibility)
            rate = {}
            for prec in ("fp32", "bf16"):
                with torch.inference_mode():

                    def run(prec=prec, batch=batch, net=model.model):
                        with autocast(prec, torch.device("cpu")):
                            return to_float32(net(batch))

                    rate[prec] = bs / median_ms(run, a.runs) * 1e3
            print(f"| {preset} | {bs} | {rate['fp32']:.2f} | {rate['bf16']:.2f} |", flush=True)
    if a.checkpoints:
        print("\n| checkpoint | mask AP fp32 | mask AP bf16 | box AP fp32 | box AP bf16 |\n|---|---|---|---|---|")
    for ckpt in a.checkpoints:
        model = blendseg.load(ckpt)
        ap = {prec: model.val(a.data, precision=prec) for prec in ("fp32", "bf16")}
        segm = {k: v.get("segm", {}).get("AP", float("nan")) for k, v in ap.items()}
        box = {k: v["bbox"]["AP"] for k, v in ap.items()}
        print(f"| {ckpt} | {segm['fp32']:.2f} | {segm['bf16']:.2f} | {box['fp32']:.2f} | {box['bf16']:.2f} |")


if __name__ == "__main__":
    main()
