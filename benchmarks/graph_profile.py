"""Where an exported graph spends its time (issue 41): onnxruntime's profiler on the fp32 and int8 exports of the
tiny presets, at fixed work (random weights whose scores clear any threshold, so every image keeps ``max_det``
detections; exported at conf 0), by part of the graph and by operator.

    python -m benchmarks.graph_profile --out runs/graph_profile [--presets blendmask_tiny ...] [--sizes 256 320 640]
        [--max-dets 10 100] [--runs 10] [--dense-masks]
    python -m benchmarks.graph_profile --checkpoints CKPT [CKPT ...] --data data.yaml [--conf 0.25] [--images 8]
        [--openvino]

The second form profiles trained checkpoints at deploy settings instead: exported at ``--conf`` with ``max_det``
100, int8 calibrated on 32 images of the data.yaml's train split, each run one of ``--images`` images of its val
split in turn (the operators' times are means over all runs); ``--openvino`` adds the OpenVINO IRs of both,
profiled by OpenVINO's per-layer counters (layer type and the kernel OpenVINO picked).

A node's part is the first module of the exporter's ``pkg.torch.onnx.name_scopes``: the network's modules (the
backbone, FPN, heads, bottom module) by their names, and ``graph`` for the graph's own code (test-time resize,
decoding, NMS, mask assembly, pasting). Q/DQ nodes inserted by the quantiser are counted as ``q/dq``. Writes
results.md (one table per preset) into --out.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

import blendseg
from benchmarks.common import checkpoint, write_markdown
from benchmarks.deploy import scene
from blendseg.export.onnx import to_openvino
from blendseg.export.quantize import calibration_images, quantize_int8

CONV = {"Conv", "QLinearConv", "ConvInteger", "FusedConv"}


def parts_of(path: Path, scopes_from: Path | None = None) -> dict[str, str]:
    """Node name -> its part of the graph (module docstring); ``scopes_from``: the fp32 export whose nodes' scopes
    name those of the int8 graph ``path`` (the quantiser keeps node names, not their scopes)."""
    import onnx

    def scopes_of(node) -> list:
        return next(
            (ast.literal_eval(p.value) for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), []
        )

    source = onnx.load(str(scopes_from or path), load_external_data=False).graph.node
    named = {node.name: scopes_of(node) for node in source}
    out = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        scopes = named.get(node.name, [])
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            out[node.name] = "q/dq"
        else:
            out[node.name] = scopes[1].split(".")[0] if len(scopes) > 2 else "graph"
    return out


def profile(
    path: Path, images: list[np.ndarray], runs: int, threads: int, scopes_from: Path | None = None
) -> tuple[float, dict, dict, float]:
    """(median ms a run, mean ms by part, mean ms by operator, mean detections) over ``runs`` profiled runs of each
    of ``images`` after one warm-up (``scopes_from``: :func:`parts_of`)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = str(path.with_suffix(""))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    dets = float(np.mean([len(sess.run(None, {name: image})[0]) for image in images]))
    for _ in range(runs):
        for image in images:
            sess.run(None, {name: image})
    trace = json.loads(Path(sess.end_profiling()).read_text())
    parts, by_part, by_op = parts_of(path, scopes_from), defaultdict(float), defaultdict(float)
    runs_seen = [e for e in trace if e.get("name") == "model_run"]
    for e in trace:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        op = e["args"].get("op_name", "?")
        by_part["conv" if op in CONV else parts.get(node, "graph")] += e["dur"]
        by_op[op] += e["dur"]
    total = float(np.median([e["dur"] for e in runs_seen[1:]])) / 1e3  # the warm-up run left out
    scale = 1e3 * len(runs_seen)  # operators: the mean over every run
    return total, {k: v / scale for k, v in by_part.items()}, {k: v / scale for k, v in by_op.items()}, dets


def openvino_profile(
    path: Path, images: list[np.ndarray], runs: int, threads: int, scopes_from: Path | None = None
) -> tuple[float, dict, dict, float]:
    """:func:`profile` for an OpenVINO IR, from OpenVINO's per-layer counters (``PERF_COUNT``), compiled as
    blendseg's runner compiles it (f32 precision hint: the int8 IR runs its quantised layers in int8). Layers are
    counted as conv, q/dq (FakeQuantize) or graph: OpenVINO fuses the network's other layers into its convolutions
    or leaves them under their own types."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32"}
    request = core.compile_model(core.read_model(str(path)), "CPU", config).create_infer_request()
    dets = float(np.mean([len(request.infer({"image": image})[0]) for image in images]))
    walls, by_part, by_op = [], defaultdict(float), defaultdict(float)
    for _ in range(runs):
        for image in images:
            t0 = time.perf_counter()
            request.infer({"image": image})
            walls.append((time.perf_counter() - t0) * 1e3)
            for layer in request.profiling_info:
                ms = layer.real_time.total_seconds() * 1e3
                part = {"Convolution": "conv", "FakeQuantize": "q/dq"}.get(layer.node_type, "graph")
                by_part[part] += ms
                by_op[f"{layer.node_type} ({layer.exec_type})" if part != "conv" else "Convolution"] += ms
    n = runs * len(images)
    return float(np.median(walls)), {k: v / n for k, v in by_part.items()}, {k: v / n for k, v in by_op.items()}, dets


def table_row(label: str, path: Path, images: list[np.ndarray], a, scopes_from: Path | None = None) -> str:
    """One markdown row of the profile of ``path`` (an ONNX file on onnxruntime, or an OpenVINO IR)."""
    run = openvino_profile if path.suffix == ".xml" else profile
    ms, parts, ops, dets = run(path, images, a.runs, a.threads, scopes_from)
    kernels = sum(parts.values()) or 1.0
    top = sorted(((v, k) for k, v in ops.items() if k not in (*CONV, "Convolution")), reverse=True)[:5]
    shares = (100 * parts.get(k, 0) / kernels for k in ("conv", "q/dq", "graph"))
    row = f"| {label} | {ms:.1f} | {dets:.1f} | " + " | ".join(f"{v:.0f}" for v in shares)
    row += " | " + ", ".join(f"{k} {v:.1f}" for v, k in top) + " |"
    print(row, flush=True)
    return row


COLUMNS = "ms / run | detections | conv % | q/dq % | graph % | top operators outside conv (ms) |"


def fixed_work(a) -> list[str]:
    """The random-weights tables (module docstring), one per preset."""
    md = []
    for preset in a.presets:
        model = blendseg.load(checkpoint(preset, a.out / f"{preset}.pt", full=True), "cpu")
        md += [f"## {preset}", "", f"| size | max_det | form | {COLUMNS}", "|---|---|---|---|---|---|---|---|---|"]
        for max_det in a.max_dets:
            stem = f"{preset}.{max_det}{'.dense' if a.dense_masks else ''}"
            fp32 = model.export(out=a.out / f"{stem}.onnx", conf=0.0, max_det=max_det, dense_masks=a.dense_masks)
            calib = [scene(320, 256, seed).numpy() for seed in range(1, a.calib + 1)]
            int8 = quantize_int8(fp32, a.out / f"{stem}.int8.onnx", calib)
            for size in a.sizes:
                image = scene(size, size * 3 // 4, seed=0).numpy()
                for form, path in (("fp32", fp32), ("int8", int8)):
                    md.append(table_row(f"{size}x{size * 3 // 4} | {max_det} | {form}", path, [image], a, fp32))
        md.append("")
    return md


def trained(a) -> list[str]:
    """The trained checkpoints' table (module docstring)."""
    images = calibration_images(str(a.data), a.images, "val")
    calib = calibration_images(str(a.data), 32)
    md = [f"| checkpoint | form | {COLUMNS}", "|---|---|---|---|---|---|---|---|---|"]
    for ckpt in a.checkpoints:
        stem = a.out / Path(ckpt).parent.parent.name
        fp32 = blendseg.load(ckpt, "cpu").export(out=stem.with_suffix(".onnx"), conf=a.conf, dense_masks=a.dense_masks)
        int8 = quantize_int8(fp32, stem.with_suffix(".int8.onnx"), calib)
        forms = {"onnxruntime fp32": fp32, "onnxruntime int8": int8}
        if a.openvino:
            forms["OpenVINO fp32"] = to_openvino(fp32, stem.with_suffix(".xml"))
            forms["OpenVINO int8"] = to_openvino(int8, stem.with_suffix(".int8.xml"))
        for i, (form, path) in enumerate(forms.items()):
            md.append(table_row(f"{ckpt if i == 0 else ''} | {form}", path, images, a, fp32))
    return md


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/graph_profile"))
    p.add_argument("--presets", nargs="+", default=["blendmask_tiny", "yolact_tiny", "meinst_tiny"])
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 320, 640])
    p.add_argument("--max-dets", nargs="+", type=int, default=[10, 100])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calib", type=int, default=8)
    p.add_argument("--dense-masks", action="store_true", help="(N, H, W) masks pasted inside the graph")
    p.add_argument("--checkpoints", nargs="+", type=Path, help="trained checkpoints instead of random presets")
    p.add_argument("--data", type=Path, help="with --checkpoints: data.yaml (val images, train calibrates)")
    p.add_argument("--conf", type=float, default=0.25, help="with --checkpoints: the exported score threshold")
    p.add_argument("--images", type=int, default=8, help="with --checkpoints: val images a run cycles over")
    p.add_argument("--openvino", action="store_true", help="with --checkpoints: OpenVINO's per-layer counters too")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    md = trained(a) if a.checkpoints else fixed_work(a)
    write_markdown(a.out / "results.md", md)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
