"""Inference speed side by side with torchvision's Mask R-CNN, by the fixed-box method: every model, random weights,
keeps exactly the same 100 boxes (sides 32-512 px, one seed), patched in after its own decoding ran, so mask work is
equal; every row makes all 100 full-image masks. One process, median of --runs, --threads compute threads.

    python -m benchmarks.speed --out runs/speed            # the default rows (about 3-4 minutes on 2 cores)
    python -m benchmarks.speed --rows blendmask_r50_1x@800x1216 maskrcnn@800x1216

A row is PRESET@HxW (the network input: no test-time resize, so every model sees the same pixels), ``maskrcnn`` for
torchvision's maskrcnn_resnet50_fpn, a ``+detector`` suffix for the FCOS detector alone (no masks) and ``+dense``
(or ``+dense_attn``) for the per-location mask outputs at every location: BlendMask's attentions, MEInst's codes,
YOLACT's coefficients (as before they were made at the kept locations only). Writes speed.md (the table, the stage
table, the command), speed.json and speed.png (bars). Peak memory is the process's peak RSS during the row (VmHWM,
reset before each row).

    python -m benchmarks.speed --out runs/speed_onnx --onnx --rows blendmask_r50_1x@800x1216 yolact_resnet50@550x550

``--onnx`` adds onnxruntime rows for each of our plain rows: the fixed-box patch cannot reach inside an exported
graph, so these compare onnxruntime with PyTorch on the same image and the same random-weights checkpoint whose
class biases are raised (and box biases: 100 non-empty detections, each predictor decoding for itself, test-time
resize included), as ``benchmarks/onnx_latency.py`` does (its ``compare``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

import blendseg.modeling.core.fcos as fcos_module
from benchmarks.common import median_ms
from blendseg.modeling.core.fcos_inference import Detections
from blendseg.modeling.methods.yolact import Yolact, YolactDetections
from blendseg.zoo import build_model, get_preset

DEFAULT_ROWS = [
    "maskrcnn@800x1216", "blendmask_r50_1x@800x1216", "blendmask_r50_1x+dense@800x1216",
    "blendmask_r50_1x+detector@800x1216", "meinst_r50_1x@800x1216", "meinst_r50_1x+dense@800x1216",
    "maskrcnn@550x836", "blendmask_rt_r50_4x_syncbn_shtw@550x836", "blendmask_rt_r50_4x_syncbn_shtw+dense@550x836",
    "blendmask_rt_r50_4x_syncbn_shtw@550x550", "yolact_resnet50@550x550", "yolact_resnet50+dense@550x550",
    "yolact_plus_resnet50@550x550",
]  # fmt: skip


def fixed_boxes(h: int, w: int, n: int = 100, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(n, 4) xyxy boxes with sides 32-512 px inside an h x w image, and descending scores."""
    g = torch.Generator().manual_seed(seed)
    side = 32 + torch.rand(n, 2, generator=g) * 480
    side = torch.minimum(side, torch.tensor([w - 1.0, h - 1.0]))
    x0 = torch.rand(n, generator=g) * (w - side[:, 0])
    y0 = torch.rand(n, generator=g) * (h - side[:, 1])
    boxes = torch.stack([x0, y0, x0 + side[:, 0], y0 + side[:, 1]], 1)
    return boxes, torch.linspace(0.9, 0.3, n)


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


def reset_peak_rss() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # Linux: reset VmHWM to the current RSS


class FixedFCOS:
    """Patches ``fcos_decode`` so that every FCOS model (BlendMask, MEInst, the detector) keeps the fixed boxes: each
    box is produced by the location nearest its centre on the level its size selects (for attentions / codes)."""

    def __init__(self, boxes: Tensor, scores: Tensor, num_classes: int) -> None:
        self.boxes, self.scores, self.num_classes = boxes, scores, num_classes
        self.real = fcos_module.fcos_decode

    def __call__(self, logits, box_reg, quality, embeds, locations, strides, *args):
        self.real(logits, box_reg, quality, embeds, locations, strides, *args)  # the decoding cost counts
        b = self.boxes
        size = torch.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
        level = (torch.log2(size / 64).floor().clamp(min=0)).long().clamp(max=len(strides) - 1)
        offsets = torch.tensor([0] + [len(loc) for loc in locations[:-1]]).cumsum(0)
        inds = []
        for box, lvl in zip(b, level.tolist()):
            loc = locations[lvl]
            centre = torch.stack([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
            inds.append(int((loc - centre).abs().sum(1).argmin()) + int(offsets[lvl]))
        inds = torch.tensor(inds)
        all_locs = torch.cat(locations)
        labels = torch.arange(len(b)) % self.num_classes
        dets = []
        for i in range(logits[0].shape[0]):
            emb = None
            if embeds is not None:
                emb = torch.cat([e[i].flatten(1) for e in embeds], 1)[:, inds].t()
            dets.append(Detections(b.clone(), self.scores.clone(), labels, all_locs[inds], level, inds, emb))
        return dets


@contextlib.contextmanager
def patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def row_input(row: str) -> tuple[str, int, int, Tensor]:
    """``NAME@HxW`` -> (NAME, H, W, the input image (3, H, W) of values 0-255, the same seed for every row)."""
    name, hw = row.split("@")
    h, w = (int(v) for v in hw.split("x"))
    return name, h, w, (torch.rand(3, h, w, generator=torch.Generator().manual_seed(1)) * 255).round()


def build(preset: str) -> torch.nn.Module:
    """``preset``'s model with random weights (no ImageNet download), in eval mode."""
    cfg = get_preset(preset).model
    cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, weights=""))
    return build_model(cfg).eval()


def ours_row(
    preset: str, mode: str, image: Tensor, boxes: Tensor, scores: Tensor, runs: int, stages: bool = False
) -> tuple[float, list[tuple[str, float, float]]]:
    """ms of one of our presets (forward + postprocess + all masks at the input size) and, with ``stages``, its
    stage table."""
    torch.manual_seed(0)
    model = build(preset)
    size = tuple(image.shape[-2:])
    stack = contextlib.ExitStack()
    if isinstance(model, Yolact):
        real = model.detect
        ih, iw = size

        def detect(out):
            real(out)
            rel = boxes / torch.tensor([iw, ih, iw, ih])
            prior = torch.arange(len(boxes)) * (out.loc.shape[1] // len(boxes))
            labels = torch.arange(len(boxes)) % model.cfg.yolact.num_classes
            return [
                YolactDetections(rel, scores, labels, prior, out.coefs_at(model.prediction_layers[0], i, prior))
                for i in range(out.loc.shape[0])
            ]

        stack.enter_context(patched(model, "detect", detect))
        if mode in ("dense", "dense_attn"):
            stack.enter_context(patched(model, "defer_coefs", False))
    else:
        fcos = model if mode == "detector" else model.fcos
        if mode == "detector":
            model = fcos
        stack.enter_context(patched(fcos_module, "fcos_decode", FixedFCOS(boxes, scores, fcos.cfg.fcos.num_classes)))
        if mode in ("dense", "dense_attn"):
            stack.enter_context(patched(type(fcos.head), "defers_embeds", property(lambda self: False)))

    def post(out):
        dets = model.postprocess(out, [size])[0]
        if dets.masks is not None:
            dets.masks.to_tensor()
        return dets

    def run():
        return post(model([image]))

    with stack, torch.inference_mode():
        n = len(run())
        assert n == len(boxes), f"{preset}: {n} detections kept, expected {len(boxes)}"
        table = stage_table(model, image, runs) if stages else []
        if stages:
            out = model([image])
            table.append(("decoding + 100 full-image masks", median_ms(lambda: post(out), runs), float("nan")))
        return median_ms(run, runs), table


def maskrcnn_row(image: Tensor, boxes: Tensor, scores: Tensor, runs: int) -> float:
    """torchvision maskrcnn_resnet50_fpn (random weights) at the input size, keeping the fixed boxes."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    h, w = image.shape[-2:]
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=min(h, w), max_size=max(h, w)).eval()
    real = model.roi_heads.postprocess_detections

    def postprocess_detections(class_logits, box_regression, proposals, image_shapes):
        real(class_logits, box_regression, proposals, image_shapes)
        labels = torch.arange(len(boxes)) % 90 + 1
        return [boxes.clone()] * len(proposals), [scores.clone()] * len(proposals), [labels] * len(proposals)

    def run():
        out = model([image / 255.0])[0]
        (out["masks"] > 0.5).contiguous()
        return out

    with patched(model.roi_heads, "postprocess_detections", postprocess_detections), torch.inference_mode():
        n = len(run()["boxes"])
        assert n == len(boxes), f"Mask R-CNN kept {n} boxes, expected {len(boxes)}"
        return median_ms(run, runs)


def stage_table(model: torch.nn.Module, image: Tensor, runs: int) -> list[tuple[str, float, float]]:
    """(stage, ms, GFLOP) of the network stages of a YOLACT or BlendMask model (the YOLACT++ paper's Table 8)."""
    x = image[None] / 255.0
    rows = []

    def stage(name, fn):
        with FlopCounterMode(display=False) as fc:
            out = fn()
        rows.append((name, median_ms(fn, runs), fc.get_total_flops() / 1e9))
        return out

    with torch.inference_mode():
        if isinstance(model, Yolact):
            feats = stage("backbone", lambda: model.backbone(x))
            pyr = stage("FPN", lambda: model.fpn([feats[n] for n in model.cfg.fpn.in_features]))
            head = model.prediction_layers[0]
            stage("prediction head (coefficients at kept priors)", lambda: [head(p, dense_coef=False) for p in pyr])
            stage("protonet", lambda: model.proto_net(pyr[0]))
            return rows
        fcos = model.fcos
        feats = stage("backbone", lambda: fcos.backbone(x))
        pyr = stage("FPN", lambda: fcos.fpn([feats[n] for n in fcos.in_features]))
        levels = [pyr[len(pyr) - len(fcos.strides) + i] for i in range(len(fcos.strides))]
        stage("FCOS head (towers, attentions at kept locations)", lambda: fcos.head(levels, dense_embeds=False))
        named = fcos.features(x)
        bottom = [named[n] for n in model.cfg.blendmask.bottom_in_features]
        stage("bases (bottom module)", lambda: model.basis_module(bottom, semantic=False))
    return rows


def onnx_table(rows: list[str], out: Path, runs: int) -> list[str]:
    """onnxruntime beside PyTorch for each plain row of ours (``benchmarks/onnx_latency.py``'s ``compare``)."""
    from benchmarks.onnx_latency import compare

    lines = [
        "| row | detections (torch / ort) | PyTorch ms: compact / + .masks | onnxruntime ms, compact graph: compact / "
        "+ .masks | ort / torch (compact) |",
        "|---|---|---|---|---|",
    ]
    print("\n" + "\n".join(lines))
    for row in rows:
        name, _, _, image = row_input(row)
        if "+" in name or name == "maskrcnn":
            continue
        r = compare(name, image.to(torch.uint8), out, 0.05, runs, torch.get_num_threads(), full=True)
        lines.append(
            f"| {row} | {r['detections'][0]} / {r['detections'][1]} | {r['torch_compact']:.0f} / "
            f"{r['torch_masks']:.0f} | {r['ort_compact']:.0f} / {r['ort_compact_masks']:.0f} | "
            f"{r['ort_compact'] / r['torch_compact']:.2f} |"
        )
        print(lines[-1], flush=True)
    return lines


def bar_chart(rows: list[dict], path: Path, threads: int) -> None:
    width, bar_h, left = 980, 26, 430
    top = 40
    img = Image.new("RGB", (width, top + bar_h * len(rows) + 20), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), f"seconds per image, fixed 100 boxes, all masks ({threads} CPU threads)", fill="black")
    longest = max(r["seconds"] for r in rows)
    for i, r in enumerate(rows):
        y = top + i * bar_h
        draw.text((10, y + 6), f"{r['row']}", fill="black")
        length = (width - left - 90) * r["seconds"] / longest
        color = (200, 90, 60) if r["row"].startswith("maskrcnn") else (60, 110, 190)
        draw.rectangle([left, y + 4, left + length, y + bar_h - 4], fill=color)
        draw.text((left + length + 6, y + 6), f"{r['seconds']:.2f} s", fill="black")
    img.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/speed"))
    p.add_argument("--rows", nargs="*", default=DEFAULT_ROWS)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    stages = ["yolact_resnet50@550x550", "blendmask_rt_r50_4x_syncbn_shtw@550x550"]
    p.add_argument("--stages", nargs="*", default=stages, help="rows that also get the stage table")
    p.add_argument("--onnx", action="store_true", help="also onnxruntime beside PyTorch for each plain row")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(a.threads)
    results, reference, stages = [], {}, {}
    table = ["| row | input | seconds | vs Mask R-CNN at that size | peak RSS MB |", "|---|---|---|---|---|"]
    print("\n".join(table))
    for row in a.rows:
        name, h, w, image = row_input(row)
        hw = f"{h}x{w}"
        preset, _, mode = name.partition("+")
        boxes, scores = fixed_boxes(h, w)
        reset_peak_rss()
        if preset == "maskrcnn":
            ms = maskrcnn_row(image, boxes, scores, a.runs)
            reference[hw] = ms
        else:
            ms, stage_rows = ours_row(preset, mode, image, boxes, scores, a.runs, stages=row in a.stages)
            if stage_rows:
                stages[row] = stage_rows
        ratio = f"{ms / reference[hw]:.2f}" if hw in reference else ""
        r = {"row": row, "input": hw, "seconds": ms / 1e3, "ratio": ratio, "peak_rss_mb": peak_rss_mb()}
        results.append(r)
        table.append(f"| {row} | {hw} | {ms / 1e3:.2f} | {ratio} | {r['peak_rss_mb']:.0f} |")
        print(table[-1], flush=True)
    lines = ["| stage | " + " | ".join(f"{r} ms | GFLOP" for r in stages) + " |", "|---|" + "---|---|" * len(stages)]
    lines = lines if stages else []
    names = list(dict.fromkeys(s for rows in stages.values() for s, _, _ in rows))
    names.sort(key=lambda s: s.startswith("decoding"))  # the network's stages first
    for s in names:
        cells = []
        for rows in stages.values():
            hit = [(ms, g) for n, ms, g in rows if n == s]
            cells.append(f"{hit[0][0]:.0f} | {hit[0][1]:.1f}".replace("nan", "") if hit else " | ")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    if lines:
        print("\n" + "\n".join(lines))
    onnx = onnx_table(a.rows, a.out, a.runs) if a.onnx else []
    cmd = "python -m benchmarks.speed " + " ".join(sys.argv[1:])
    text = "\n\n".join("\n".join(part) for part in (table, lines, onnx) if part)
    (a.out / "speed.md").write_text(text + f"\n\nCommand: `{cmd}`\n")
    summary = {"rows": results, "stages": stages, "threads": a.threads, "onnx": onnx}
    (a.out / "speed.json").write_text(json.dumps(summary, indent=1))
    bar_chart(results, a.out / "speed.png", a.threads)
    print(f"\nwrote {a.out / 'speed.md'}, speed.json, speed.png")


if __name__ == "__main__":
    main()
