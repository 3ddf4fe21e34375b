"""Panoptic quality (PQ, SQ, RQ) exactly as panopticapi's ``pq_compute`` defines it, on predictions in the COCO
panoptic format (PNG of segment ids + ``segments_info``), and the evaluator that turns panoptic BlendMask's
outputs into that format while it streams.

Per image, a ground-truth and a predicted segment of the same category match when IoU > 0.5, where the union leaves
out the predicted segment's pixels on void (id 0); crowd ground truths never match. Unmatched ground truths are
false negatives (crowd ones ignored); an unmatched prediction is a false positive unless more than half of it lies on
void or on the crowd region of its category. Per category PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP,
RQ = TP / (TP + FP/2 + FN/2); each average is over the categories with TP + FP + FN > 0.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..data.panoptic import read_panoptic_png, save_panoptic_png
from ..dist import gather_objects, is_main_process
from ..errors import DataError

OFFSET = 256 * 256 * 256
VOID = 0


class PQStat:
    """Per-category sums (IoU of matches, TP, FP, FN); ``+`` merges images or processes."""

    def __init__(self) -> None:
        self.iou: dict[int, float] = defaultdict(float)
        self.tp: dict[int, int] = defaultdict(int)
        self.fp: dict[int, int] = defaultdict(int)
        self.fn: dict[int, int] = defaultdict(int)

    def __add__(self, other: PQStat) -> PQStat:
        out = PQStat()
        for name in ("iou", "tp", "fp", "fn"):
            for src in (getattr(self, name), getattr(other, name)):
                for k, v in src.items():
                    getattr(out, name)[k] += v
        return out

    def average(self, categories: dict[int, dict], isthing: bool | None) -> tuple[dict[str, float], dict]:
        """Mean PQ / SQ / RQ (fractions) over the categories of the kind (``isthing`` None: all) that occur."""
        pq = sq = rq = 0.0
        n, per_class = 0, {}
        for cid, cat in categories.items():
            if isthing is not None and bool(cat.get("isthing")) != isthing:
                continue
            tp, fp, fn, iou = self.tp[cid], self.fp[cid], self.fn[cid], self.iou[cid]
            if tp + fp + fn == 0:
                per_class[cid] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            per_class[cid] = {
                "pq": iou / (tp + 0.5 * fp + 0.5 * fn),
                "sq": iou / tp if tp else 0.0,
                "rq": tp / (tp + 0.5 * fp + 0.5 * fn),
            }
            pq, sq, rq = pq + per_class[cid]["pq"], sq + per_class[cid]["sq"], rq + per_class[cid]["rq"]
        if n == 0:  # panopticapi divides by zero here
            return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def pq_image(
    gt_ids: np.ndarray,
    gt_segments: list[dict],
    pred_ids: np.ndarray,
    pred_segments: list[dict],
    categories: dict[int, dict],
    where: str = "",
) -> PQStat:
    """PQ statistics of one image (panopticapi's ``pq_compute_single_core`` body).

    Args:
        gt_ids / pred_ids: (H, W) segment ids (0 void). gt_segments: ``segments_info`` with ``id``,
            ``category_id``, ``area`` (used for the union, as panopticapi) and ``iscrowd``; pred_segments: with
            ``id`` and ``category_id`` (areas are counted from ``pred_ids``).
        categories: category id -> category (with ``isthing``).
        where: names the image in errors (a prediction inconsistent with its PNG, or of an unknown category).
    """
    stat = PQStat()
    gt = {int(s["id"]): s for s in gt_segments}
    pred = {int(s["id"]): dict(s) for s in pred_segments}
    unseen = set(pred)
    labels, counts = np.unique(pred_ids, return_counts=True)
    for label, count in zip(labels.tolist(), counts.tolist()):
        if label not in pred:
            if label == VOID:
                continue
            raise DataError(f"{where}: segment {label} is in the PNG but not in segments_info")
        pred[label]["area"] = count
        unseen.discard(label)
        if pred[label]["category_id"] not in categories:
            raise DataError(f"{where}: segment {label} has unknown category_id {pred[label]['category_id']}")
    if unseen:
        raise DataError(f"{where}: segments {sorted(unseen)} are in segments_info but not in the PNG")
    joint = gt_ids.astype(np.uint64) * OFFSET + pred_ids.astype(np.uint64)
    labels, counts = np.unique(joint, return_counts=True)
    inter = {(int(k // OFFSET), int(k % OFFSET)): int(c) for k, c in zip(labels.tolist(), counts.tolist())}
    gt_matched, pred_matched = set(), set()
    for (g, p), n in inter.items():
        if g not in gt or p not in pred or gt[g].get("iscrowd", 0) == 1:
            continue
        if gt[g]["category_id"] != pred[p]["category_id"]:
            continue
        union = pred[p]["area"] + gt[g]["area"] - n - inter.get((VOID, p), 0)
        iou = n / union
        if iou > 0.5:
            stat.tp[gt[g]["category_id"]] += 1
            stat.iou[gt[g]["category_id"]] += iou
            gt_matched.add(g)
            pred_matched.add(p)
    crowd_of_category = {}
    for g, info in gt.items():
        if g in gt_matched:
            continue
        if info.get("iscrowd", 0) == 1:
            crowd_of_category[info["category_id"]] = g
            continue
        stat.fn[info["category_id"]] += 1
    for p, info in pred.items():
        if p in pred_matched:
            continue
        ignored = inter.get((VOID, p), 0)
        if info["category_id"] in crowd_of_category:
            ignored += inter.get((crowd_of_category[info["category_id"]], p), 0)
        if ignored / info["area"] > 0.5:
            continue
        stat.fp[info["category_id"]] += 1
    return stat


def summarize(stat: PQStat, categories: dict[int, dict]) -> dict:
    """The ``panoptic`` metrics section in percent: PQ / SQ / RQ for all, things (``_th``) and stuff (``_st``),
    the category counts and ``per_class`` (by category name)."""
    out: dict = {}
    for suffix, isthing in (("", None), ("_th", True), ("_st", False)):
        avg, per_class = stat.average(categories, isthing)
        out.update({f"{k.upper()}{suffix}": avg[k] * 100 for k in ("pq", "sq", "rq")})
        out[f"n{suffix}"] = avg["n"]
        if isthing is None:
            out["per_class"] = {
                str(categories[c].get("name", c)): {k.upper(): v * 100 for k, v in r.items()}
                for c, r in per_class.items()
            }
    return out


def format_table(metrics: dict) -> str:
    """The PQ table detectron2 prints (percent)."""
    rows = ["|        |    PQ   |    SQ   |    RQ   | #categories |"]
    rows.append("|:------:|:-------:|:-------:|:-------:|:-----------:|")
    for name, s in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        values = " | ".join(f"{metrics[k + s]:7.3f}" for k in ("PQ", "SQ", "RQ"))
        rows.append(f"| {name:6s} | {values} | {metrics['n' + s]:11d} |")
    return "\n".join(rows)


def pq_compute(
    gt_json: str | os.PathLike, gt_dir: str | os.PathLike, pred_json: str | os.PathLike, pred_dir: str | os.PathLike
) -> dict:
    """PQ of predictions in the COCO panoptic format against a COCO panoptic ground truth (files, as panopticapi's
    ``pq_compute``): every ground-truth image needs a prediction. Returns :func:`summarize`'s dict."""
    gt = json.loads(Path(gt_json).read_text())
    pred = json.loads(Path(pred_json).read_text())
    categories = {c["id"]: c for c in gt["categories"]}
    pred_of_image = {a["image_id"]: a for a in pred["annotations"]}
    stat = PQStat()
    for g in gt["annotations"]:
        p = pred_of_image.get(g["image_id"])
        if p is None:
            raise DataError(f"{pred_json}: no prediction for image id {g['image_id']}")
        where = f"{Path(pred_dir) / p['file_name']} (image id {g['image_id']})"
        stat = stat + pq_image(
            read_panoptic_png(Path(gt_dir) / g["file_name"]),
            g["segments_info"],
            read_panoptic_png(Path(pred_dir) / p["file_name"]),
            p["segments_info"],
            categories,
            where,
        )
    return summarize(stat, categories)


def to_coco_panoptic(panoptic, thing_cat_ids: list[int], stuff_cat_ids: list[int]) -> tuple[np.ndarray, list[dict]]:
    """A :class:`~blendseg.structures.PanopticResult` in the COCO panoptic format: (H, W) uint32 ids and
    ``segments_info`` with dataset category ids (things: label -> ``thing_cat_ids``; stuff: 1..S ->
    ``stuff_cat_ids``), ``isthing`` and, for things, ``score``."""
    segments = []
    for s in panoptic.segments_info:
        cat = thing_cat_ids[s["category_id"]] if s["isthing"] else stuff_cat_ids[s["category_id"] - 1]
        seg = {"id": int(s["id"]), "category_id": int(cat), "isthing": int(bool(s["isthing"]))}
        if "score" in s:
            seg["score"] = float(s["score"])
        segments.append(seg)
    return panoptic.panoptic_seg.cpu().numpy().astype(np.uint32), segments


class PanopticEvaluator:
    """``reset()`` / ``process(image_ids, detections)`` / ``evaluate()`` for panoptic models: each image's
    ``detections.panoptic`` goes to the COCO panoptic format (written as PNG + ``predictions.json`` into ``out_dir``
    when one is given) and is scored against the ground-truth PNG right away, so memory does not grow with the
    split; the per-category sums are gathered over processes.

    Args:
        panoptic_gt: the ground-truth panoptic JSON dict; ``gt_dir``: its PNG folder.
        thing_cat_ids / stuff_cat_ids: dataset category ids of the thing labels and of the stuff labels 1..S.
    """

    def __init__(
        self,
        panoptic_gt: dict,
        gt_dir: str | os.PathLike,
        thing_cat_ids: list[int],
        stuff_cat_ids: list[int],
        out_dir: str | os.PathLike | None = None,
    ) -> None:
        self.categories = {c["id"]: c for c in panoptic_gt["categories"]}
        self.gt_of_image = {a["image_id"]: a for a in panoptic_gt["annotations"]}
        self.gt_dir = Path(gt_dir)
        self.thing_cat_ids, self.stuff_cat_ids = list(thing_cat_ids), list(stuff_cat_ids)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.reset()

    def reset(self) -> None:
        self.stat, self.records = PQStat(), []

    def process(self, image_ids: list[int], detections: list) -> None:
        for iid, dets in zip(image_ids, detections):
            gt = self.gt_of_image.get(int(iid))
            if dets.panoptic is None or gt is None:
                continue
            ids, segments = to_coco_panoptic(dets.panoptic, self.thing_cat_ids, self.stuff_cat_ids)
            name = Path(gt["file_name"]).with_suffix(".png").name
            if self.out_dir is not None:
                save_panoptic_png(ids, self.out_dir / "panoptic" / name)
            self.records.append({"image_id": int(iid), "file_name": name, "segments_info": segments})
            gt_ids = read_panoptic_png(self.gt_dir / gt["file_name"])
            self.stat = self.stat + pq_image(gt_ids, gt["segments_info"], ids, segments, self.categories, name)

    def evaluate(self, verbose: bool = True) -> dict[str, dict]:
        stats = gather_objects(self.stat)
        records = [r for part in gather_objects(self.records) for r in part]
        if not is_main_process():
            return {}
        total = PQStat()
        for s in stats:
            total = total + s
        metrics = summarize(total, self.categories)
        if self.out_dir is not None:
            cats = list(self.categories.values())
            pred = {"annotations": sorted(records, key=lambda r: r["image_id"]), "categories": cats}
            (self.out_dir / "panoptic_predictions.json").write_text(json.dumps(pred))
        if verbose:
            print(f"panoptic quality ({len(records)} images):\n{format_table(metrics)}")
        return {"panoptic": metrics}
