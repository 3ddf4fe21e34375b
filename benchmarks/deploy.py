"""Every deployment path of a model side by side, in one process (issue 22): latency, and accuracy.

    python -m benchmarks.deploy latency [--rows blendmask_r50_1x@1216x800 ...] [--runs 3] [--maskrcnn]
    python -m benchmarks.deploy accuracy CKPT [CKPT ...] --data data.yaml [--methods MinMax Entropy Percentile]
    python -m benchmarks.deploy stream CKPT [CKPT ...] --data data.yaml [--conf 0.25] [--split val]

The paths: PyTorch's predictor in fp32, fused (``Model.fuse``) and bf16; onnxruntime on the fp32 export and on its
int8 form (``export --int8``); OpenVINO on the fp32 export converted (``export --format openvino``) in fp32 and bf16,
and on the int8 export converted (OpenVINO runs the QDQ graph in int8).

``latency``: a row is PRESET@WxH. Each preset gets random weights whose class (and box) biases are raised so every
image yields the full ``--max-det`` detections (``benchmarks/common.py``'s checkpoints: the worst case for masks);
the image is a synthetic scene of that size; int8 is calibrated on ``--calib`` other scenes. Every path is built
first, then timed in alternating rounds (one warm-up each), so drift of the machine falls on all alike; medians of
``--runs``. ``--maskrcnn`` adds torchvision's Mask R-CNN R50-FPN fp32 at each row's size (``benchmarks/speed.py``'s
fixed-box row: 100 masks). Prints a markdown table (ms, speed-up over PyTorch fp32, and over Mask R-CNN).

``accuracy``: box / mask AP of one checkpoint in every form on the data.yaml's val split, by the same evaluator
(``blendseg val``). Every form runs image by image (the PyTorch rows with a batch of one, as the graphs run), so
the rows differ by precision only. int8 is calibrated on ``--calib`` train images with each of ``--methods``, and
with each ``--op-types`` set; OpenVINO's int8 row converts the first method's graph.

``stream``: deploy settings on real pictures. One trained checkpoint at a time, one predictor per path streaming
over the images of the data.yaml's ``--split`` (decoded once, up front), each exported at ``--conf`` (the score
threshold and ``max_det`` inside the graph, as a user exports for deployment) and asked for its masks. Paths are
timed in alternating rounds over all images; the row is the median over ``--runs`` rounds of the mean ms an image,
with the detections an image each path returned.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import blendseg
from benchmarks.common import checkpoint
from blendseg.engine.runner import Evaluation
from blendseg.export.onnx import export_onnx, has_deformable_convs, to_openvino
from blendseg.export.quantize import OP_TYPES, calibration_images, quantize_int8
from blendseg.inference.onnx_runtime import OnnxPredictor, OpenVinoPredictor

DEFAULT_ROWS = [
    "blendmask_r50_1x@1216x800", "blendmask_rt_r50_4x_syncbn_shtw@550x550", "yolact_resnet50@550x550",
    "meinst_r50_1x@1216x800", "blendmask_tiny@384x256", "yolact_tiny@256x256", "meinst_tiny@384x256",
]  # fmt: skip


MASK_RCNN = "torchvision Mask R-CNN R50-FPN fp32"


def scene(width: int, height: int, seed: int = 0) -> torch.Tensor:
    """A (3, H, W) uint8 picture of coloured discs on a gradient (not noise: real-looking statistics)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    img = np.stack([xx / width * 180, yy / height * 160, np.full_like(xx, 90.0)], -1)
    for _ in range(20):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(20, 150)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return torch.from_numpy(img.clip(0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous()


def exported_forms(
    model: blendseg.Model,
    out: Path,
    stem: str,
    images: list,
    methods,
    op_types,
    max_det: int = 100,
    conf: float = 0.05,
) -> dict[str, Path]:
    """The exported files of ``model``: fp32 ONNX, one int8 ONNX per (method, op set), and OpenVINO IRs of the
    fp32 graph and of the first int8 one (for a model with deformable convs, of its GridSample form, as
    ``export --format openvino`` makes them)."""
    files = {"fp32": model.export(out=out / f"{stem}.onnx", conf=conf, max_det=max_det)}
    for method in methods:
        for ops in op_types:
            tag = f"int8 {method} {'+'.join(ops)}"
            dst = out / f"{stem}.int8.{method}.{'-'.join(ops)}.onnx"
            files[tag] = quantize_int8(files["fp32"], dst, images, method, ops)
    flat, flat_int8 = files["fp32"], files[next(k for k in files if k.startswith("int8"))]
    if has_deformable_convs(model.model):
        flat = export_onnx(model.model, model.cfg, model.categories, out / f"{stem}.flat.onnx", conf=conf,
                           max_det=max_det, deform_conv_op=False)  # fmt: skip
        flat_int8 = quantize_int8(flat, out / f"{stem}.flat.int8.onnx", images, methods[0], op_types[0])
    files["openvino fp32"] = to_openvino(flat, out / f"{stem}.xml")
    files["openvino int8"] = to_openvino(flat_int8, out / f"{stem}.int8.xml")
    return files


def latency_paths(preset: str, image: torch.Tensor, out: Path, a) -> dict[str, object]:
    """Every path of ``preset`` as a callable on ``image``, built and warmed up."""
    ckpt = checkpoint(preset, out / f"{preset}.pt", full=True)
    model = blendseg.load(ckpt, "cpu")
    h, w = image.shape[-2:]
    calib = [scene(w, h, seed).numpy() for seed in range(1, a.calib + 1)]
    files = exported_forms(model, out, preset, calib, [a.methods[0]], [a.op_types[0]], a.max_det)
    int8 = next(v for k, v in files.items() if k.startswith("int8"))
    paths = {
        "PyTorch fp32": model.predictor(0.05, a.max_det),
        "PyTorch fp32 fused": blendseg.load(ckpt, "cpu").fuse().predictor(0.05, a.max_det),
        "PyTorch bf16": model.predictor(0.05, a.max_det, precision="bf16"),
        "onnxruntime fp32": OnnxPredictor(files["fp32"], 0.05, a.max_det, threads=a.threads),
        "onnxruntime int8": OnnxPredictor(int8, 0.05, a.max_det, threads=a.threads),
        "OpenVINO fp32": OpenVinoPredictor(files["openvino fp32"], 0.05, a.max_det, threads=a.threads),
        "OpenVINO bf16": OpenVinoPredictor(files["openvino fp32"], 0.05, a.max_det, threads=a.threads,
                                           precision="bf16"),
        "OpenVINO int8": OpenVinoPredictor(files["openvino int8"], 0.05, a.max_det, threads=a.threads),
    }  # fmt: skip
    calls = {name: (lambda p=p: p(image).masks) for name, p in paths.items()}  # masks made: the user's cost
    for name, call in calls.items():
        masks = call()
        print(f"  {preset}: {name} built and warmed up, {len(masks)} detections", file=sys.stderr, flush=True)
    return calls


def latency(a) -> None:
    a.out.mkdir(parents=True, exist_ok=True)
    print("| preset @ size | path | ms | x PyTorch fp32 | x Mask R-CNN |\n|---|---|---|---|---|")
    results = {}
    for row in a.rows:
        preset, size = row.split("@")
        w, h = (int(v) for v in size.split("x"))
        image = scene(w, h)
        try:
            calls = latency_paths(preset, image, a.out, a)
        except Exception as e:  # noqa: BLE001 - one row's failure is reported, the other rows still run
            print(f"| {row} | failed: {type(e).__name__}: {str(e).splitlines()[0][:200]} | | | |", flush=True)
            continue
        times: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(a.runs):  # alternating rounds
            for name, call in calls.items():
                t0 = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - t0) * 1e3)
        ms = {name: statistics.median(t) for name, t in times.items()}
        if a.maskrcnn:  # its own model and medians, after the rounds (speed.py's fixed-box row)
            from speed import fixed_boxes, maskrcnn_row

            ms[MASK_RCNN] = maskrcnn_row(image.float(), *fixed_boxes(h, w), a.runs)
        base, rcnn = ms["PyTorch fp32"], ms.get(MASK_RCNN)
        for i, (name, v) in enumerate(ms.items()):
            vs_rcnn = f"{v / rcnn:.2f}" if rcnn else ""
            print(f"| {row if i == 0 else ''} | {name} | {v:.0f} | {base / v:.2f} | {vs_rcnn} |", flush=True)
        results[row] = ms
    (a.out / "latency.json").write_text(json.dumps(results, indent=2))


def ap_row(fn) -> dict:
    """{box, mask, s}: the AP of one evaluation call and its seconds."""
    t0 = time.perf_counter()
    m = fn()
    return {"box": m["bbox"]["AP"], "mask": m.get("segm", {}).get("AP", float("nan")), "s": time.perf_counter() - t0}


def checkpoint_accuracy(ckpt: Path, a, images: list) -> dict[str, dict]:
    """The rows of one checkpoint (module docstring), printed as they come."""
    out = a.out / Path(ckpt).parent.parent.name
    out.mkdir(parents=True, exist_ok=True)
    model = blendseg.load(ckpt, "cpu")
    fused = blendseg.load(ckpt, "cpu").fuse()
    one = dataclasses.replace(model.cfg, solver=dataclasses.replace(model.cfg.solver, ims_per_batch=1))
    forms = {
        "PyTorch fp32": lambda: Evaluation(one, str(a.data), model.device)(model.model),
        "PyTorch bf16": lambda: Evaluation(one, str(a.data), model.device, precision="bf16")(model.model),
        "PyTorch fp32 fused": lambda: Evaluation(one, str(a.data), fused.device)(fused.model),
    }
    for tag, path in exported_forms(model, out, "model", images, a.methods, a.op_types).items():
        name = tag if tag.startswith("openvino") else f"onnxruntime {tag}"
        forms[name] = lambda p=path: blendseg.load(p).val(a.data)
        if tag == "openvino fp32":
            forms["openvino bf16"] = lambda p=path: blendseg.load(p).val(a.data, precision="bf16")
    rows = {}
    for i, (name, fn) in enumerate(forms.items()):
        r = rows[name] = ap_row(fn)
        print(f"| {ckpt if i == 0 else ''} | {name} | {r['box']:.2f} | {r['mask']:.2f} | {r['s']:.0f} |", flush=True)
    return rows


def accuracy(a) -> None:
    images = calibration_images(str(a.data), a.calib)
    print("| checkpoint | form | box AP | mask AP | seconds |\n|---|---|---|---|---|")
    results = {str(ckpt): checkpoint_accuracy(ckpt, a, images) for ckpt in a.checkpoints}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "accuracy.json").write_text(json.dumps(results, indent=2))


def stream_paths(ckpt: Path, a, calib: list) -> dict[str, object]:
    """PyTorch fp32, onnxruntime fp32 / int8 and OpenVINO fp32 / int8 predictors of ``ckpt`` at ``a.conf``."""
    out = a.out / Path(ckpt).parent.parent.name
    out.mkdir(parents=True, exist_ok=True)
    model = blendseg.load(ckpt, "cpu")
    files = exported_forms(model, out, "model", calib, [a.methods[0]], [a.op_types[0]], a.max_det, a.conf)
    int8 = next(v for k, v in files.items() if k.startswith("int8"))
    return {
        "PyTorch fp32": model.predictor(a.conf, a.max_det),
        "onnxruntime fp32": OnnxPredictor(files["fp32"], a.conf, a.max_det, threads=a.threads),
        "onnxruntime int8": OnnxPredictor(int8, a.conf, a.max_det, threads=a.threads),
        "OpenVINO fp32": OpenVinoPredictor(files["openvino fp32"], a.conf, a.max_det, threads=a.threads),
        "OpenVINO int8": OpenVinoPredictor(files["openvino int8"], a.conf, a.max_det, threads=a.threads),
    }


def stream(a) -> None:
    images = [torch.from_numpy(i) for i in calibration_images(str(a.data), a.count, a.split)]
    calib = calibration_images(str(a.data), a.calib)
    sides = [s for i in images for s in i.shape[1:]]
    sizes = f"{min(sides)}-{max(sides)} px" if min(sides) < max(sides) else f"{sides[0]} px"
    print(f"{len(images)} images ({sizes}), conf {a.conf}", file=sys.stderr)
    print("| checkpoint | path | ms an image | x PyTorch fp32 | detections an image |\n|---|---|---|---|---|")
    results = {}
    for ckpt in a.checkpoints:
        paths = stream_paths(ckpt, a, calib)
        dets = {name: sum(len(p(i).masks) for i in images) / len(images) for name, p in paths.items()}  # warm-up
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(a.runs):  # alternating rounds over every image
            for name, p in paths.items():
                t0 = time.perf_counter()
                for i in images:
                    _ = p(i).masks  # masks made: the user's cost
                times[name].append((time.perf_counter() - t0) * 1e3 / len(images))
        ms = {name: statistics.median(t) for name, t in times.items()}
        for i, (name, v) in enumerate(ms.items()):
            ratio = ms["PyTorch fp32"] / v
            print(f"| {ckpt if i == 0 else ''} | {name} | {v:.1f} | {ratio:.2f} | {dets[name]:.1f} |", flush=True)
        results[str(ckpt)] = {"ms": ms, "detections": dets, "images": len(images), "sizes": sizes}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "stream.json").write_text(json.dumps(results, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, help="PRESET@WxH")
    lat.add_argument("--runs", type=int, default=3)
    lat.add_argument("--calib", type=int, default=4, help="int8 calibration scenes")
    lat.add_argument("--max-det", type=int, default=100)
    lat.add_argument("--maskrcnn", action="store_true", help="torchvision's Mask R-CNN fp32 at each row's size")
    acc = sub.add_parser("accuracy")
    acc.add_argument("checkpoints", nargs="+", type=Path)
    acc.add_argument("--data", type=Path, required=True)
    acc.add_argument("--calib", type=int, default=64, help="int8 calibration images of the train split")
    st = sub.add_parser("stream")
    st.add_argument("checkpoints", nargs="+", type=Path)
    st.add_argument("--data", type=Path, required=True, help="data.yaml: its --split streamed, its train calibrates")
    st.add_argument("--split", default="val")
    st.add_argument("--count", type=int, default=1000, help="at most this many images of the split")
    st.add_argument("--conf", type=float, default=0.25)
    st.add_argument("--max-det", type=int, default=100)
    st.add_argument("--runs", type=int, default=5)
    st.add_argument("--calib", type=int, default=64, help="int8 calibration images of the train split")
    for q in (lat, acc, st):
        q.add_argument("--threads", type=int, default=2)
        q.add_argument("--methods", nargs="+", default=["MinMax"], help="int8 calibration methods")
        q.add_argument("--op-types", nargs="+", default=["+".join(OP_TYPES)],
                       help="int8 op sets, each joined by '+' (e.g. Conv Conv+Add+Relu+MaxPool)")  # fmt: skip
        q.add_argument("--out", type=Path, default=Path("runs/bench_deploy"))
    a = p.parse_args()
    a.op_types = [tuple(s.split("+")) for s in a.op_types]
    torch.set_num_threads(a.threads)
    {"latency": latency, "accuracy": accuracy, "stream": stream}[a.mode](a)


if __name__ == "__main__":
    main()
