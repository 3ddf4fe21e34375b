"""The ``blendseg`` command line: one sub-command per task, each a thin front door to :mod:`blendseg.api` /
:mod:`blendseg.engine` (the same code paths as the Python API)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError
from .overrides import apply_overrides, dump_yaml

DESCRIPTION = (
    "Train, evaluate, predict with and export BlendMask, YOLACT / YOLACT++ and MEInst models (pure PyTorch + "
    "torchvision). `blendseg presets` lists the model configs; `blendseg COMMAND --help` explains each command."
)


def _cmd_train(a: argparse.Namespace) -> int:
    from .api import train

    train(a.preset, a.data, a.out, weights=a.weights, overrides=a.overrides, resume=a.resume, evaluate=not a.no_eval)
    return 0


def _cmd_val(a: argparse.Namespace) -> int:
    from .engine.runner import validate

    metrics = validate(a.checkpoint, a.data, a.split, a.out, a.precision, a.device, a.save_worst, slice=_slice_spec(a))
    summary = {
        k: {m: round(v, 2) for m, v in d.items() if isinstance(v, float)}
        for k, d in metrics.items()
        if isinstance(d, dict) and k != "errors"  # the error table is printed above
    }
    print(json.dumps(summary, indent=1))
    return 0


def _cmd_compare(a: argparse.Namespace) -> int:
    from .engine.compare import compare

    table, figure = compare(a.runs, a.out)
    print(table)
    print(f"figure: {figure}")
    return 0


def _cmd_synth(a: argparse.Namespace) -> int:
    if a.video:
        from .data.synth_video import synthesize_video

        for k in range(a.sequences):
            name = f"synth-{k + 1:02d}"
            folder = synthesize_video(a.out, a.frames, tuple(a.size), a.objects, a.seed + k, jitter=a.jitter, name=name)
            print(f"wrote {folder}: {a.frames} frames in img1/, ground-truth tracks in gt/gt.txt (MOTS)")
        return 0
    from .data.synth import synthesize

    path = synthesize(a.out, a.train, a.val, a.seed, a.min_size, a.max_size, a.difficulty, a.panoptic, a.object_scale)
    print(f"wrote {path}")
    return 0


def _check_data(path: str, strict: bool = False, preset: str | None = None) -> list:
    """Every split of a data.yaml or dataset folder, in any format, as training reads it (the same fixes), its
    images decoded in full, and what each holds (:func:`~blendseg.data.report.summarize`; against ``preset``'s
    input size and strides when given)."""
    from .data.report import summarize
    from .data.sources import load_data, read_split
    from .zoo import get_preset

    spec, problems, cfg = load_data(path), [], get_preset(preset) if preset else None
    for note in spec.notes:
        print(note)
    for name, s in spec.splits.items():
        if s.panoptic is not None and s.annotations is None:
            print(f"{path}: {name}: panoptic (check its JSON: blendseg data check {s.panoptic} --masks DIR)")
            continue
        data, _, probs = read_split(spec, name, strict=strict, decode=True)
        problems += [p for p in probs if p not in problems]  # the parts of one file report its problems once
        what = f"{s.format} annotations {s.annotations}" if s.annotations else f"{s.format} labels of {s.images}"
        held = f" ({s.part} part)" if s.part else ""
        print(f"{path}: {name}{held}: {what}")
        names = spec.names or [str(c.get("name", c["id"])) for c in sorted(data["categories"], key=lambda c: c["id"])]
        print("\n".join(f"  {line}" for line in summarize(data, names, cfg, train=name == "train")))
    if cfg is None:
        print("(blendseg data check DATA --preset NAME: object sizes against a model's input size and strides)")
    return problems


def _cmd_check(a: argparse.Namespace) -> int:
    from .data.check import check_coco, load_json
    from .data.panoptic import check_panoptic

    if a.annotations.endswith((".yaml", ".yml")) or Path(a.annotations).is_dir():
        data, problems = None, _check_data(a.annotations, a.strict, a.preset)
    else:
        data, problems = load_json(a.annotations)
    if data is not None and any("segments_info" in ann for ann in data["annotations"][:1]):  # COCO panoptic
        masks = a.masks or str(Path(a.annotations).with_suffix(""))  # COCO's layout: panoptic_val2017(.json)
        problems = check_panoptic(data, a.annotations, masks)
        print(f"{a.annotations}: COCO panoptic, PNGs in {masks}")
    elif data is not None:
        problems = check_coco(data, a.annotations, a.images, strict=a.strict)[1]
    for p in problems:
        print(p)
    errors = sum(p.severity == "error" for p in problems)
    print(f"{a.annotations}: {errors} error(s), {len(problems) - errors} warning(s)")
    return 1 if errors else 0


def _cmd_convert_data(a: argparse.Namespace) -> int:
    from .data.convert import convert_dataset, convert_from

    if a.source_format and a.to != "coco":
        print(f"--from {a.source_format} writes COCO (--to coco); convert that folder --to yolo next", file=sys.stderr)
        return 2
    if a.source_format:
        path, report = convert_from(a.data, a.source_format, a.out, a.images, a.attribute)
    else:
        path, report = convert_dataset(a.data, a.to, a.out)
    print("\n".join(report) + f"\nwrote {path}")
    return 0


def _cmd_eval_panoptic(a: argparse.Namespace) -> int:
    from .evaluation.panoptic import format_table, pq_compute

    metrics = pq_compute(a.gt_json, a.gt_dir, a.pred_json, a.pred_dir)
    print(format_table(metrics))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"panoptic": metrics}, indent=2))
        print(f"wrote {a.out}")
    return 0


def _cmd_convert(a: argparse.Namespace) -> int:
    from .convert.adelaidet import convert_adelaidet
    from .convert.yolact import convert_yolact
    from .engine.checkpoint import save_checkpoint
    from .overrides import to_dict

    if a.source == "adelaidet":
        if not a.config:
            print("--from adelaidet needs --config CONFIG.yaml", file=sys.stderr)
            return 2
        cfg, state, unmapped = convert_adelaidet(a.config, a.weights)
    elif a.source == "yolact":  # --preset NAME | --config official CONFIG.json | the preset named by the file
        cfg, state, unmapped = convert_yolact(a.weights, a.preset, a.config)
    else:
        print(f"unsupported --from {a.source!r} (supported: adelaidet, yolact)", file=sys.stderr)
        return 2
    if unmapped:
        print(f"warning: {len(unmapped)} key(s) not mapped (method parts not converted yet), e.g. {unmapped[:3]}")
    out = Path(a.out)
    if out.suffix != ".pt":
        out = out / "model.pt"
    save_checkpoint(out, {"model": state, "config": to_dict(cfg), "iteration": 0})
    print(f"wrote {out}")
    return 0


def _cmd_predict(a: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import load
    from .figures import show_bases
    from .inference.sources import is_video_file, iter_source
    from .predict import PredictionWriter

    model = load(a.checkpoint, a.device)
    if a.fuse:
        model.fuse()
    if a.show_bases and model.model is None:
        print("warning: --show-bases needs the .pt checkpoint (an ONNX graph has no bases to show)", file=sys.stderr)
        a.show_bases = False
    writer = PredictionWriter(
        a.out,
        model.categories,
        not a.no_draw,
        a.save_json,
        a.save_panoptic,
        a.save_coco,
        a.save_txt,
        style=_draw_style(a),
    )
    predictor = model.predictor(a.conf, a.max_det, None, a.precision, _slice_spec(a))  # where load put it
    items = iter_source(a.source, on_skip=lambda msg: tqdm.write(f"warning: {msg}"))
    unit = "frame" if any(is_video_file(s) for s in a.source) else "img"
    try:
        for it in tqdm(items, desc="predict", unit=unit, dynamic_ncols=True, mininterval=1):
            writer.write(_only(predictor(it.image, it.path, it.frame), a.classes), it.fps)
            if a.show_bases and it.frame is None:
                fig = show_bases(model.model, model.cfg, it.image, model.categories.thing_names, a.conf)
                stem = Path(it.path).stem if it.path else f"image{writer.count - 1:06d}"
                if fig is not None:
                    fig.save(Path(a.out) / f"{stem}_bases.png")
    finally:
        written = writer.close()
    print(f"{writer.count} image(s) -> {a.out}" + "".join(f", {p.name}" for p in written))
    return 0


def _tracker_kwargs(a: argparse.Namespace) -> dict:
    return {"high": a.high, "low": a.low, "new": a.new, "buffer": a.buffer, "use_masks": not a.boxes_only}


def _cmd_track(a: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import load
    from .inference.sources import is_video_file, video_fps
    from .inference.tracker import ByteTracker
    from .predict import MotsWriter, PredictionWriter

    model = load(a.checkpoint, a.device)
    out, written = Path(a.out), []
    for source in a.source:  # each one sequence, with its own tracker
        video = is_video_file(source)
        name = Path(source).stem if video else Path(source.rstrip("/*")).name or "frames"
        sequence = None if video else name
        writer = PredictionWriter(
            out, model.categories, not a.no_draw, a.save_json, sequence=sequence, json_name=name, style=_draw_style(a)
        )
        mots = MotsWriter(out / "mots" / f"{name}.txt", model.categories.thing_ids) if a.save_mots else None
        fps = video_fps(source) if video else a.fps
        tracker = ByteTracker(**_tracker_kwargs(a))
        try:
            results = model.track(source, tracker, a.conf, a.max_det, None, True, a.precision)
            for r in tqdm(results, desc=name, unit="frame", dynamic_ncols=True, mininterval=1):
                r = _only(r, a.classes)
                writer.write(r, fps)
                if mots is not None:
                    mots.write(r)
        finally:
            writer.close()
            written += [mots.close()] if mots is not None else []
        print(f"{name}: {writer.count} frame(s), {tracker.next_id - 1} track(s)")
    print(f"-> {out}" + "".join(f", {p.relative_to(out)}" for p in written))
    return 0


def _cmd_val_track(a: argparse.Namespace) -> int:
    from .api import load
    from .evaluation.tracking import format_rows

    model = load(a.checkpoint, a.device)
    m = model.val_track(a.sequences, a.out, a.conf, a.max_det, _tracker_kwargs(a), None, a.precision)
    rows = {"all (by detection)": m["all"], "all (by class)": m["class_averaged"]}
    names = dict(zip(model.categories.thing_ids, model.categories.thing_names))
    rows.update({names.get(c, str(c)): r for c, r in m["classes"].items()})
    print(f"{len(m['sequences'])} sequence(s), masks scored by TrackEval:\n{format_rows(rows)}")
    st = m["stability"]
    print(
        f"stability: still objects' predicted mask IoU frame to frame {st['still']:.3f} ({st['still_pairs']} pairs); "
        f"moving ones' |predicted - true change| {st['change_error']:.3f} ({st['moving_pairs']} pairs)"
    )
    if a.out:
        print(f"tracks and metrics.json -> {a.out}")
    return 0


def _slice_spec(a: argparse.Namespace):
    """The ``--slice`` options as a SliceSpec, or None without ``--slice``."""
    from .inference.slicing import SliceSpec

    return SliceSpec(a.slice, a.overlap, a.slice_full, a.slice_batch) if a.slice else None


def _draw_style(a: argparse.Namespace):
    from .vis import DrawStyle

    return DrawStyle(not a.hide_labels, not a.hide_conf, a.line_width, not a.hide_boxes)


def _only(result, classes: list[int] | None):
    """``result`` with only the instances of ``classes`` (class indices; None: all), as ultralytics' ``classes``."""
    if classes is None:
        return result
    import torch

    return result[torch.isin(result.labels, torch.tensor(classes))]


def _cmd_export(a: argparse.Namespace) -> int:
    import time

    from .api import load
    from .export.onnx import read_metadata

    if a.int8 and not a.data:
        print("export --int8: calibration needs images: add --data data.yaml (its train split)", file=sys.stderr)
        return 2
    images = None
    if a.format == "openvino":
        from .inference.onnx_runtime import require_openvino

        require_openvino()  # before the export's minute is spent
    if a.int8:
        from .export.quantize import calibration_images
        from .inference.onnx_runtime import require_onnxruntime

        require_onnxruntime()  # before anything is written
        images = calibration_images(a.data, a.calib_images)  # a bad data.yaml fails here, nothing written
    t0 = time.perf_counter()
    model = load(a.checkpoint, "cpu")
    out = model.export(a.format, a.out, a.opset, a.conf, a.max_det, a.dense_masks, images, a.calib_method, a.keep_float)
    meta = read_metadata(out)
    extra = f", int8 calibrated on {len(images)} images ({a.calib_method})" if a.int8 else ""
    print(
        f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB, opset {meta['opset']}{extra}, "
        f"{time.perf_counter() - t0:.0f} s): image (3, H, W) uint8 RGB -> {', '.join(meta['outputs'])}; conf {a.conf} "
        f"and max_det {a.max_det} inside the graph. Run it: blendseg predict {out} IMAGES"
    )
    return 0


def _cmd_fit_encoding(a: argparse.Namespace) -> int:
    import torch

    from .data.coco import open_split
    from .data.encoding import fit_encoding
    from .engine.checkpoint import save_checkpoint

    fit = fit_encoding(open_split(a.data, a.split), a.dim, a.mask_size, seed=a.seed)
    out = Path(a.out)
    save_checkpoint(out, {k: v for k, v in fit.items() if torch.is_tensor(v)})  # atomic; weights_only loadable
    ratio = float(fit["explained_variance_ratio"].sum())
    print(
        f"fitted {a.dim}-d PCA on {fit['num_masks']} masks: explained variance {ratio:.3f}, reconstruction mIoU "
        f"{fit['reconstruction_miou']:.4f} -> {out}"
    )
    return 0


def _cmd_presets(a: argparse.Namespace) -> int:
    from .zoo import PRESETS, list_presets

    for name in list_presets(all=a.all):
        info = PRESETS[name]
        print(f"{name}\n    source:   {info.source or 'blendseg (CPU recipe)'}")
        if info.reported:
            print(f"    reported: {info.reported}")
        if a.verbose:
            print(f"    {info.summary}")
    return 0


def _cmd_cfg(a: argparse.Namespace) -> int:
    from .zoo import get_preset

    print(dump_yaml(apply_overrides(get_preset(a.preset), a.overrides)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="blendseg", description=DESCRIPTION)
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in (
        _add_train,
        _add_val,
        _add_compare,
        _add_data,
        _add_eval_panoptic,
        _add_convert,
        _add_predict,
        _add_track,
        _add_val_track,
        _add_export,
        _add_fit_encoding,
        _add_presets,
        _add_cfg,
    ):
        add(sub)
    return p


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a preset on a data.yaml")
    t.add_argument("preset")
    t.add_argument("data", help="data.yaml")
    t.add_argument("overrides", nargs="*", help="key=value, e.g. solver.max_iter=100 model.fcos.norm=GN")
    t.add_argument("--out", help="run folder (default runs/PRESET)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/weights/last.pt")
    t.add_argument(
        "--weights",
        help="start from a blendseg checkpoint, an official AdelaiDet or dbolya/yolact .pth / .safetensors, or a "
        "torchvision / detectron2 backbone state dict (recognised by content); tensors of another shape (class "
        "count) stay freshly initialised",
    )
    t.add_argument("--no-eval", action="store_true", help="skip the final COCO evaluation")
    t.set_defaults(fn=_cmd_train)


def _add_val(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("val", help="COCO evaluation of a checkpoint")
    v.add_argument("checkpoint")
    v.add_argument("data")
    v.add_argument("--split", default="val")
    v.add_argument(
        "--out",
        help="folder for metrics.json, coco_instances_results.json, the curves, confusion matrices and error breakdown",
    )
    v.add_argument(
        "--save-worst",
        type=int,
        default=0,
        metavar="K",
        help="with --out: draw the K images with the most errors, each error named (worst/)",
    )
    v.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="network precision")
    v.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N")
    _add_slice_args(v)
    v.set_defaults(fn=_cmd_val)


def _add_draw_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--classes", type=int, nargs="+", help="keep only these class indices (0-based), as ultralytics")
    p.add_argument("--hide-labels", action="store_true", help="drawings without the name / score tags")
    p.add_argument("--hide-conf", action="store_true", help="drawings without the scores in the tags")
    p.add_argument("--hide-boxes", action="store_true", help="drawings without boxes (masks and outlines only)")
    p.add_argument("--line-width", type=int, help="box and outline width in pixels (default: scaled to the image)")


def _add_slice_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--slice",
        type=int,
        metavar="SIZE",
        help="large images: predict in overlapping SIZE x SIZE tiles and merge their instances by mask",
    )
    p.add_argument("--overlap", type=float, default=0.2, help="--slice: the fraction neighbouring tiles share")
    p.add_argument("--slice-full", action="store_true", help="--slice: also predict the whole image and merge it in")
    p.add_argument("--slice-batch", type=int, default=4, help="--slice: tiles per network call")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compare", help="final metrics and curves of two or more runs side by side")
    c.add_argument("runs", nargs="+", help="run folders (what `blendseg train --out` wrote)")
    c.add_argument("--out", default="runs/compare", help="folder for compare.md and compare.png")
    c.set_defaults(fn=_cmd_compare)


def _add_data(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_cmd", required=True)
    s = d.add_parser("synth", help="write the synthetic COCO-format shapes dataset")
    s.add_argument("out")
    s.add_argument("--train", type=int, default=1000)
    s.add_argument("--val", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--min-size", type=int, default=256)
    s.add_argument("--max-size", type=int, default=320)
    s.add_argument("--difficulty", choices=("easy", "normal", "hard"), default="normal")
    s.add_argument("--panoptic", action="store_true", help="stuff backgrounds + COCO panoptic PNGs and JSON")
    s.add_argument(
        "--object-scale",
        type=int,
        metavar="S",
        help="large images of small objects: shapes sized as in an S-px image, as many per S x S (--min-size 2000)",
    )
    s.add_argument(
        "--video", action="store_true", help="a video instead: moving shapes with ground-truth track ids (MOTS)"
    )
    s.add_argument("--size", type=int, nargs=2, default=[192, 256], metavar=("H", "W"), help="--video: frame size")
    s.add_argument("--frames", type=int, default=60, help="--video: the number of frames")
    s.add_argument("--objects", type=int, default=8, help="--video: the number of shapes")
    s.add_argument("--sequences", type=int, default=1, help="--video: synth-01, synth-02, ... (seeds seed, seed+1...)")
    s.add_argument("--jitter", type=float, default=1.5, help="--video: camera shake, pixels (standard deviation)")
    s.set_defaults(fn=_cmd_synth)
    c = d.add_parser("check", help="validate COCO annotations or every split of a dataset (exit 1 on errors)")
    c.add_argument(
        "annotations", help="a COCO JSON (or COCO panoptic JSON), a data.yaml (COCO or YOLO layout) or an export folder"
    )
    c.add_argument("--images", help="image folder: also check every file exists, opens and has its size")
    c.add_argument(
        "--masks", help="COCO panoptic JSON: its PNG folder (default: the JSON's path without .json, COCO's layout)"
    )
    c.add_argument("--strict", action="store_true", help="every fix an error (as data.strict=true in training)")
    c.add_argument("--preset", help="a data.yaml or folder: object sizes against this preset's input and strides")
    c.set_defaults(fn=_cmd_check)
    dc = d.add_parser("convert", help="a dataset in another layout (COCO JSON <-> YOLO labels; LabelMe, VIA -> COCO)")
    dc.add_argument("data", help="data.yaml or dataset folder; with --from: a LabelMe folder or a VIA JSON")
    dc.add_argument("--to", required=True, choices=("coco", "yolo"))
    dc.add_argument("--from", dest="source_format", choices=("labelme", "via"), help="read this tool's format")
    dc.add_argument("--images", help="--from via: the images' folder (default: the JSON's)")
    dc.add_argument("--attribute", help="--from via: the region attribute that holds the class")
    dc.add_argument("--out", required=True, help="folder for the labels / JSON and the new data.yaml")
    dc.set_defaults(fn=_cmd_convert_data)


def _add_eval_panoptic(sub: argparse._SubParsersAction) -> None:
    ep = sub.add_parser("eval-panoptic", help="PQ / SQ / RQ of predictions in the COCO panoptic format")
    ep.add_argument("gt_json")
    ep.add_argument("gt_dir", help="ground-truth PNG folder")
    ep.add_argument("pred_json")
    ep.add_argument("pred_dir", help="predicted PNG folder")
    ep.add_argument("--out", help="metrics.json to write ({'panoptic': {...}}, percent)")
    ep.set_defaults(fn=_cmd_eval_panoptic)


def _add_convert(sub: argparse._SubParsersAction) -> None:
    cv = sub.add_parser("convert", help="convert a reference checkpoint")
    cv.add_argument("--from", dest="source", required=True, choices=("adelaidet", "yolact"))
    cv.add_argument(
        "--config", help="adelaidet: detectron2 config.yaml (_BASE_ resolved); yolact: the official config as JSON"
    )
    cv.add_argument("--preset", help="yolact: blendseg preset (default: inferred from the official file name)")
    cv.add_argument("--weights", required=True, help=".pth or .safetensors")
    cv.add_argument("--out", required=True, help="output folder or .pt file")
    cv.set_defaults(fn=_cmd_convert)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("predict", help="predict on images / folders / globs: drawings, --save-json, --save-panoptic")
    pr.add_argument("checkpoint")
    pr.add_argument("source", nargs="+", help="image or video files, folders or globs (quoted)")
    pr.add_argument("--out", default="runs/predict")
    pr.add_argument("--conf", type=float, default=0.3, help="keep detections scoring at least this")
    pr.add_argument("--max-det", type=int, default=100, help="keep at most this many per image")
    pr.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N")
    pr.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "fp16"],
        help="bf16: the network ~2x faster on CPUs with bf16 units (decoding and masks stay float32); fp16: CUDA",
    )
    pr.add_argument(
        "--fuse",
        action="store_true",
        help="batch norms folded into their convolutions (faster on a CPU; same results up to float rounding)",
    )
    _add_slice_args(pr)
    _add_draw_args(pr)
    pr.add_argument("--save-json", action="store_true", help="write predictions.json (boxes, scores, RLE masks)")
    pr.add_argument(
        "--save-coco",
        action="store_true",
        help="pre-labels: a COCO dataset (coco/images + coco/annotations/"
        "instances_default.json, polygons) that CVAT, Roboflow and Label Studio import",
    )
    pr.add_argument("--save-txt", action="store_true", help="pre-labels: YOLO-seg labels/<name>.txt (ultralytics)")
    pr.add_argument("--no-draw", action="store_true", help="do not write <name>_pred.png drawings")
    pr.add_argument(
        "--show-bases",
        action="store_true",
        help="also <name>_bases.png: BlendMask bases and attentions, YOLACT prototypes and coefficients, MEInst codes",
    )
    pr.add_argument(
        "--save-panoptic", action="store_true", help="panoptic models: also panoptic/*.png + panoptic.json (COCO)"
    )
    pr.set_defaults(fn=_cmd_predict)


def _add_tracker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conf", type=float, default=0.1, help="keep detections down to this score (the tracker's --low)")
    p.add_argument("--max-det", type=int, default=100)
    p.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--high", type=float, default=0.5, help="ByteTrack's first stage: detections scoring at least this")
    p.add_argument("--low", type=float, default=0.1, help="its second stage: weak ones that keep tracks alive")
    p.add_argument("--new", type=float, default=0.6, help="the score a detection needs to start a track")
    p.add_argument("--buffer", type=int, default=30, help="frames a lost track waits before it ends")
    p.add_argument("--boxes-only", action="store_true", help="associate by box IoU alone (as the common trackers)")


def _add_track(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("track", help="predict over videos / folders of frames with ids kept across frames")
    t.add_argument("checkpoint")
    t.add_argument("source", nargs="+", help="video files or folders / globs of frames in order; each is a sequence")
    t.add_argument("--out", default="runs/track")
    _add_tracker_args(t)
    t.add_argument("--fps", type=float, default=25.0, help="frame rate of the drawn video of a folder of frames")
    t.add_argument("--save-mots", action="store_true", help="mots/<sequence>.txt: the tracks in the MOTS format")
    t.add_argument("--save-json", action="store_true", help="<sequence>.json: per frame boxes, RLE masks and track ids")
    t.add_argument("--no-draw", action="store_true", help="do not write the drawn video (or frames)")
    _add_draw_args(t)
    t.set_defaults(fn=_cmd_track)


def _add_val_track(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("val-track", help="HOTA / IDF1 / MOTA on masks (TrackEval) and mask stability on sequences")
    v.add_argument("checkpoint")
    v.add_argument(
        "sequences", nargs="+", help="MOTChallenge sequence folders (img1/, gt/gt.txt in MOTS) or folders of them"
    )
    v.add_argument("--out", help="also write each sequence's tracks (<sequence>.txt, MOTS) and metrics.json here")
    _add_tracker_args(v)
    v.set_defaults(fn=_cmd_val_track)


def _add_export(sub: argparse._SubParsersAction) -> None:
    from .inference.onnx_runtime import FORMATS

    ex = sub.add_parser("export", help="export a checkpoint as one ONNX graph (resize, network, NMS, masks)")
    ex.add_argument("checkpoint", help="blendseg .pt checkpoint (or a preset name: random weights)")
    ex.add_argument(
        "--format",
        default="onnx",
        choices=[f.name for f in FORMATS.values()],
        help="onnx (onnxruntime), or openvino: the same graph as an OpenVINO IR (.xml + .bin)",
    )
    ex.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18; 19 with deformable convs)")
    ex.add_argument("--out", default=None, help="output file (default: the checkpoint's path with .onnx)")
    ex.add_argument("--conf", type=float, default=0.3, help="score threshold applied inside the graph")
    ex.add_argument("--max-det", type=int, default=100, help="at most this many detections per image")
    ex.add_argument(
        "--dense-masks",
        action="store_true",
        help="paste the masks inside the graph, as (N, H, W) uint8 (for consumers other than blendseg); by default "
        "the graph outputs per-box mask probabilities (+ boxes), pasted by blendseg's runners when asked for",
    )
    ex.add_argument(
        "--int8",
        action="store_true",
        help="static int8 quantisation of the network's convolutions, adds and ReLUs "
        "(onnxruntime), calibrated on --data's train split; decoding, NMS and masks stay float",
    )
    ex.add_argument("--data", help="data.yaml whose train split calibrates --int8")
    ex.add_argument("--calib-images", type=int, default=64, help="calibration images for --int8")
    ex.add_argument(
        "--calib-method",
        default="MinMax",
        choices=["MinMax", "Entropy", "Percentile"],
        help="onnxruntime's activation range calibration for --int8",
    )
    ex.add_argument(
        "--keep-float",
        nargs="+",
        default=[],
        metavar="MODULE",
        help="--int8: modules left in float (parts of their dotted names, e.g. cls_logits)",
    )
    ex.set_defaults(fn=_cmd_export)


def _add_fit_encoding(sub: argparse._SubParsersAction) -> None:
    fe = sub.add_parser("fit-encoding", help="fit MEInst's PCA mask encoding on a dataset's masks")
    fe.add_argument("data", help="data.yaml")
    fe.add_argument("--dim", type=int, default=60)
    fe.add_argument("--mask-size", type=int, default=28)
    fe.add_argument("--split", default="train")
    fe.add_argument("--seed", type=int, default=0)
    fe.add_argument("--out", required=True, help="output .pt (load with model.meinst.encoding_file=...)")
    fe.set_defaults(fn=_cmd_fit_encoding)


def _add_presets(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser("presets", help="list presets: the reference config each follows and its published AP")
    pr.add_argument("-v", "--verbose", action="store_true", help="also each preset's description")
    pr.add_argument("--all", action="store_true", help="also the test suite's tiny presets (*_test)")
    pr.set_defaults(fn=_cmd_presets)


def _add_cfg(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("cfg", help="print the resolved config of a preset")
    g.add_argument("preset")
    g.add_argument("overrides", nargs="*")
    g.set_defaults(fn=_cmd_cfg)


def _one_line(message, category, filename, lineno, line=None) -> str:
    """A warning as the command line shows it: its text on one line, not the source line that raised it."""
    text = str(message)
    return (text if text.startswith(("WARNING ", "warning: ")) else f"warning: {text}") + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments; ``key=value`` overrides may come before or after the ``--options``."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:
        if not hasattr(args, "overrides") or any("=" not in r or r.startswith("-") for r in rest):
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.overrides = list(args.overrides) + rest
    return args


def main(argv: list[str] | None = None) -> int:
    import warnings

    from .errors import DataError

    warnings.formatwarning = _one_line
    args = parse_args(argv)
    from .engine.checkpoint import CheckpointError
    from .engine.compare import RunFolderError
    from .engine.fit import TrainingStopped
    from .errors import MissingExtra

    try:
        return args.fn(args)
    except TrainingStopped as e:
        print(f"\n{e}", file=sys.stderr)
        return e.exit_code
    except (ConfigError, DataError, KeyError, FileNotFoundError, CheckpointError, RunFolderError, MissingExtra) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
