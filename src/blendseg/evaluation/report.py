"""What an evaluation leaves beside its numbers (``val --out DIR`` and the end of training): the detections as COCO
results JSON, precision-recall and F1-confidence curves, confusion matrices, TIDE's error breakdown (printed and
returned for metrics.json) and, on request, the images with the most errors drawn with their error types.

Files (ultralytics' names for the curves): ``coco_instances_results.json`` (detectron2's name; RLE masks),
``BoxPR_curve.png``, ``BoxF1_curve.png``, ``confusion_matrix_box.png`` and the ``Mask*`` / ``*_mask`` ones,
``worst/*.png``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .coco import COCOEvaluator
from .curves import f1_confidence, pr_curves
from .errors import ERROR_TYPES, SPECIAL_TYPES, TideErrors, confusion_matrix, tide

KINDS = {"bbox": "Box", "segm": "Mask"}
ERROR_COLORS = {
    "Cls": (230, 25, 75),
    "Loc": (245, 130, 48),
    "Both": (145, 30, 180),
    "Dupe": (0, 130, 200),
    "Bkg": (240, 50, 230),
    "Miss": (255, 225, 25),
}


def write_report(
    evaluator: COCOEvaluator, out_dir: str | Path, metrics: dict, verbose: bool = True
) -> tuple[dict, dict[str, TideErrors]]:
    """Write the files of the module docstring for a finished ``evaluator`` (main process) into ``out_dir`` and
    add to ``metrics`` (in place, also returned): ``metrics[iou_type]["F1"]`` / ``["F1_conf"]`` (the best mean F1
    at IoU 0.5 and its confidence threshold) and ``metrics["errors"][iou_type]`` (:meth:`TideErrors.summary`).
    Returns ``metrics`` and the :class:`TideErrors` per IoU type."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coco_instances_results.json").write_text(json.dumps(evaluator.gathered))
    from .plots import enabled, plot_confusion, plot_f1, plot_pr

    draw = enabled()

    names, gt = evaluator.class_names, evaluator.coco_gt
    errors: dict[str, TideErrors] = {}
    for iou_type, arrays in evaluator.arrays.items():
        kind = KINDS[iou_type]
        section = metrics.setdefault(iou_type, {})
        pr = pr_curves(arrays["precision"], arrays["rec_thrs"], names)
        f1 = f1_confidence(arrays["precision"], arrays["scores"], arrays["rec_thrs"], names)
        if draw:
            plot_pr(pr, section, f"{kind}", out / f"{kind}PR_curve.png")
            plot_f1(f1, kind, out / f"{kind}F1_curve.png")
        conf = f1["best_conf"] if f1["best_conf"] is not None else 0.25
        section.update(F1=f1["best_f1"], F1_conf=f1["best_conf"])
        m = confusion_matrix(gt, evaluator.gathered, evaluator.contiguous_to_cat_id, iou_type, conf=conf)
        if draw:
            plot_confusion(m, names, kind, conf, out / f"confusion_matrix_{kind.lower()}.png")
        errors[iou_type] = tide(gt, evaluator.gathered, iou_type)
    metrics["errors"] = {k: e.summary() for k, e in errors.items()}
    if verbose:
        print(format_report(metrics, names))
    return metrics, errors


def format_report(metrics: dict, class_names: list[str]) -> str:
    """Per-class AP ("no instances" where the split has none), the suggested --conf, and TIDE's table."""
    types = [t for t in KINDS if t in metrics and isinstance(metrics[t], dict)]
    width = max([len(n) for n in class_names] + [5])
    lines = [f"{'class':<{width}}  " + "  ".join(f"{KINDS[t] + ' AP':>8}" for t in types)]
    for n in class_names:
        cells = []
        for t in types:
            v = metrics[t].get(f"AP-{n}")
            cells.append(f"{v:8.1f}" if v is not None else f"{'no instances':>12}")
        lines.append(f"{n:<{width}}  " + "  ".join(cells))
    for t in types:
        if metrics[t].get("F1_conf") is not None:
            lines.append(
                f"{KINDS[t].lower()}: best F1 {metrics[t]['F1']:.3f} at conf {metrics[t]['F1_conf']:.2f}"
                f" (suggested --conf {metrics[t]['F1_conf']:.2f})"
            )
    if metrics.get("errors"):
        lines.append("TIDE: AP50 gained by fixing each error type (counts in brackets)")
        head = f"{'':<6}{'AP50':>6}" + "".join(f"{k:>13}" for k in ERROR_TYPES)
        lines.append(head + "".join(f"{k:>10}" for k in SPECIAL_TYPES))
        for t, e in metrics["errors"].items():
            row = f"{KINDS[t].lower():<6}{e['AP50']:6.1f}"
            row += "".join(f"{e['dAP'][k]:7.2f} ({e['counts'][k]:>4})" for k in ERROR_TYPES)
            row += "".join(f"{e['special'][k]:10.2f}" for k in SPECIAL_TYPES)
            lines.append(row)
    return "\n".join(lines)


def save_worst(
    evaluator: COCOEvaluator,
    errors: TideErrors,
    read_image: Callable[[int], np.ndarray],
    out_dir: str | Path,
    k: int,
    conf: float = 0.3,
) -> list[Path]:
    """The ``k`` images with the most errors among predictions scoring >= ``conf`` (and misses): ground truth (left,
    misses marked) beside those predictions (right: true positives grey, each error in its type's colour and
    named), as PNGs in ``out_dir``."""
    from PIL import Image, ImageDraw

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = evaluator.gathered
    shown = {
        iid: [e for e in errs if e["dt"] is None or res[e["dt"]]["score"] >= conf]
        for iid, errs in errors.per_image.items()
    }
    worst = sorted(((iid, e) for iid, e in shown.items() if e), key=lambda kv: (-len(kv[1]), kv[0]))[:k]
    by_image: dict[int, list[int]] = {}
    for i, r in enumerate(res):
        by_image.setdefault(r["image_id"], []).append(i)
    gt_by_image: dict[int, list[dict]] = {}
    for a in evaluator.coco_gt.get("annotations", []):
        gt_by_image.setdefault(a["image_id"], []).append(a)
    names = dict(zip(evaluator.contiguous_to_cat_id, evaluator.class_names))
    paths = []
    for iid, errs in worst:
        rgb = read_image(iid)
        flagged = {e["dt"]: e["type"] for e in errs if e["dt"] is not None}
        missed = {e["gt"] for e in errs if e["type"] == "Miss"}
        left = [(a, "Miss" if a["id"] in missed else "GT") for a in gt_by_image.get(iid, [])]
        right = [(res[i], flagged.get(i, "TP")) for i in by_image.get(iid, []) if res[i]["score"] >= conf]
        scale = 2 if max(rgb.shape[:2]) < 400 else 1
        panels = [_draw(rgb, items, names, scale) for items in (left, right)]
        w, h = panels[0].size
        canvas = Image.new("RGB", (2 * w + 8, h + 18), "white")
        canvas.paste(panels[0], (0, 18))
        canvas.paste(panels[1], (w + 8, 18))
        draw = ImageDraw.Draw(canvas)
        draw.text((2, 3), f"image {iid}: ground truth | predictions >= {conf:.2f}; {len(errs)} errors:", fill="black")
        x = 330
        for kind, color in ERROR_COLORS.items():
            draw.text((x, 3), kind, fill=color)
            x += 8 * len(kind) + 10
        paths.append(out / f"{len(paths):02d}_image{iid}.png")
        canvas.save(paths[-1])
    return paths


def _draw(rgb: np.ndarray, items: list[tuple[dict, str]], names: dict[int, str], scale: int):
    """``rgb`` enlarged ``scale`` times with each (record, kind) drawn: mask tinted, box, "kind: class score"."""
    from PIL import Image

    from ..ops.rle import decode
    from ..vis import _label, _pen

    h, w = rgb.shape[:2]
    canvas = rgb.astype(np.float32)
    for rec, kind in items:
        if "segmentation" in rec and not rec.get("iscrowd", 0):
            color = np.array(ERROR_COLORS.get(kind, (60, 180, 75) if kind == "GT" else (160, 160, 160)))
            mask = decode(rec["segmentation"], h, w).astype(bool)
            canvas[mask] = 0.6 * canvas[mask] + 0.4 * color
    image = Image.fromarray(canvas.astype(np.uint8)).resize((w * scale, h * scale), Image.NEAREST)
    draw, font, _ = _pen(image)
    for rec, kind in items:
        color = ERROR_COLORS.get(kind, (60, 180, 75) if kind == "GT" else (160, 160, 160))
        x, y, bw, bh = (v * scale for v in rec["bbox"])
        draw.rectangle([x, y, x + bw, y + bh], outline=color, width=2)
        label = names.get(rec["category_id"], str(rec["category_id"]))
        label = label if kind in ("GT", "TP") else f"{kind}: {label}"
        label += f" {rec['score']:.2f}" if "score" in rec else ""
        _label(draw, (x, y), label, font, tuple(int(c * 0.7) for c in color), anchor="lb")  # dark for white text
    return image
