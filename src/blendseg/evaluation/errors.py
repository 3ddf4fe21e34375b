"""Why a model errs: TIDE's error breakdown (Bolya et al., ECCV 2020) and a confusion matrix, from the ground-truth
COCO dict and COCO result records (the ones :class:`~blendseg.evaluation.coco.COCOEvaluator` scores).

TIDE, as its paper and its tidecv package define it: per image, predictions in score order (at most ``max_dets``)
are matched greedily to unmatched ground truth of their class at IoU >= t_f = 0.5; each prediction left over is one
error, tested in this order: no ground truth in the image -> Bkg; best IoU with its class in [t_b, t_f] -> Loc;
IoU >= t_f with another class -> Cls; IoU >= t_f with a ground truth of its class already matched -> Dupe; every
IoU <= t_b = 0.1 -> Bkg; otherwise Both. Ground truth nobody matched and no Cls / Loc error points at is Miss.
The AP gained by fixing one type (dAP) is AP50 with that type fixed minus AP50: a Cls / Loc error on a ground
truth still free becomes a true positive (the highest-scoring one per ground truth; the others and those on matched
ground truth are removed), Dupe, Bkg and Both predictions are removed, a Miss leaves the ground-truth count. AP is
TIDE's: 101 recall points on the monotone precision envelope, the mean over every class with a prediction or a
ground truth (a class with predictions only scores 0). Crowd regions absorb unmatched predictions of their class
at IoF > t_f. FalsePos / FalseNeg: the AP with every false positive removed / every missed ground truth forgiven.

Shapes: P predictions and G ground truths of one image; ``iou`` (P, G).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ..ops.rle import mask_api, segm_to_rle

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
SPECIAL_TYPES = ("FalsePos", "FalseNeg")
RECALL_POINTS = np.arange(101) / 100  # i / 100 exactly, as TIDE (COCOeval's linspace differs in the last bit)


@dataclass
class TideErrors:
    """What :func:`tide` finds: AP50, the dAP of each error type and special error, the counts, and the errors of
    each image (``{"type", "dt": index into the results or None, "gt": annotation id or None}``)."""

    ap50: float
    dap: dict[str, float]
    special: dict[str, float]
    counts: dict[str, int]
    per_image: dict[int, list[dict]] = field(default_factory=dict)

    def summary(self) -> dict:
        """The JSON-ready part (metrics.json's ``errors``)."""
        return {"AP50": self.ap50, "dAP": self.dap, "special": self.special, "counts": self.counts}


def geometry(coco_gt: dict, results: list[dict], iou_type: str):
    """Per image id: the ground truth (annotations) and the predictions ((result index, record) pairs), and a
    function giving what ``mask_api.iou`` compares (xywh boxes or RLEs) for a record of an image."""
    sizes = {im["id"]: (im["height"], im["width"]) for im in coco_gt["images"]}
    gts, dts = defaultdict(list), defaultdict(list)
    for a in coco_gt.get("annotations", []):
        gts[a["image_id"]].append(a)
    for i, r in enumerate(results):
        dts[r["image_id"]].append((i, r))

    def geom(record: dict, image_id: int):
        if iou_type == "bbox":
            return list(map(float, record["bbox"]))
        return segm_to_rle(record["segmentation"], *sizes[image_id])

    return gts, dts, geom


def pairwise_iou(dt: list, gt: list, crowd: list[bool]) -> np.ndarray:
    """(len(dt), len(gt)) IoU (IoF against crowd regions) of boxes or RLEs, COCO's definition."""
    if not dt or not gt:
        return np.zeros((len(dt), len(gt)))
    return np.asarray(mask_api.iou(dt, gt, [int(c) for c in crowd]), dtype=np.float64).reshape(len(dt), len(gt))


def _score(record: dict, iou_type: str) -> float:
    return float(record.get("mask_score", record["score"])) if iou_type == "segm" else float(record["score"])


def average_precision(points: list[tuple[float, bool]], num_gt: int) -> float:
    """TIDE's AP of one class in percent: (score, true positive) points, ``num_gt`` positives."""
    if num_gt <= 0:
        return 0.0
    if not points:
        return 0.0
    order = np.argsort([-s for s, _ in points], kind="stable")
    tp = np.array([points[i][1] for i in order], dtype=np.float64)
    tps, fps = np.cumsum(tp), np.cumsum(1 - tp)
    precision = np.maximum.accumulate((tps / (tps + fps))[::-1])[::-1]
    recall = tps / num_gt
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    y = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0)
    return float(y.mean() * 100)


def mean_ap(points: dict[int, dict[int, tuple[float, bool]]], num_gt: dict[int, int]) -> float:
    classes = [c for c in set(points) | set(num_gt) if points.get(c) or num_gt.get(c, 0) > 0]
    if not classes:
        return 0.0
    return float(np.mean([average_precision(list(points.get(c, {}).values()), num_gt.get(c, 0)) for c in classes]))


def tide(
    coco_gt: dict,
    results: list[dict],
    iou_type: str = "bbox",
    pos_thresh: float = 0.5,
    bg_thresh: float = 0.1,
    max_dets: int = 100,
) -> TideErrors:
    """TIDE's breakdown of ``results`` against ``coco_gt`` for "bbox" or "segm" (module docstring)."""
    gts, dts, geom = geometry(coco_gt, results, iou_type)
    points: dict[int, dict[int, tuple[float, bool]]] = defaultdict(dict)  # class -> prediction -> (score, tp)
    num_gt: dict[int, int] = defaultdict(int)
    errors: list[dict] = []  # type, class, dt, score, ignored, gt, fix class
    best: dict[int, tuple[float, int]] = {}  # free ground truth -> (score, prediction) of its best Cls/Loc error
    false_neg: dict[int, int] = defaultdict(int)
    per_image: dict[int, list[dict]] = {}
    for image in coco_gt["images"]:
        iid = image["id"]
        gt = [a for a in gts[iid] if not a.get("iscrowd", 0)]
        crowd = [a for a in gts[iid] if a.get("iscrowd", 0)]
        preds = sorted(dts[iid], key=lambda p: -_score(p[1], iou_type))[:max_dets]
        first = len(errors)
        for a in gt:
            num_gt[a["category_id"]] += 1
        used = np.zeros(len(gt), dtype=bool)
        usable = np.zeros(len(gt), dtype=bool)
        if preds:
            iou = pairwise_iou([geom(r, iid) for _, r in preds], [geom(a, iid) for a in gt], [False] * len(gt))
            pcls = np.array([r["category_id"] for _, r in preds])
            same = pcls[:, None] == np.array([a["category_id"] for a in gt], dtype=np.int64)[None, :]
            cls_iou = iou * same
            buf, tp = cls_iou.copy(), np.zeros(len(preds), dtype=bool)
            for i in range(len(preds)):
                if gt and buf[i].max() >= pos_thresh:
                    j = int(buf[i].argmax())
                    tp[i], used[j] = True, True
                    buf[:, j] = 0
            ignored = np.zeros(len(preds), dtype=bool)
            for c in crowd:
                iof = pairwise_iou([geom(r, iid) for _, r in preds], [geom(c, iid)], [True])[:, 0]
                ignored |= ~tp & (iof > pos_thresh) & (pcls == c["category_id"])
            for i, (k, r) in enumerate(preds):
                s, c = _score(r, iou_type), int(r["category_id"])
                if not ignored[i]:
                    points[c][k] = (s, bool(tp[i]))
                if tp[i]:
                    continue
                e = {"class": c, "dt": k, "score": s, "ignored": bool(ignored[i]), "gt": None, "fix": None}
                if not gt:
                    e["type"] = "Bkg"
                elif bg_thresh <= cls_iou[i].max() <= pos_thresh:
                    j = int(cls_iou[i].argmax())
                    e.update(type="Loc", gt=j, fix=c)
                elif (iou[i] * ~same[i]).max() >= pos_thresh:
                    j = int((iou[i] * ~same[i]).argmax())
                    e.update(type="Cls", gt=j, fix=int(gt[j]["category_id"]))
                elif (cls_iou[i] * used).max() >= pos_thresh:
                    e["type"] = "Dupe"
                elif iou[i].max() <= bg_thresh:
                    e["type"] = "Bkg"
                else:
                    e["type"] = "Both"
                if e["gt"] is not None and not used[e["gt"]]:
                    usable[e["gt"]] = True
                    key = gt[e["gt"]]["id"]
                    if key not in best or best[key][0] < s:
                        best[key] = (s, k)
                if e["gt"] is not None:
                    e["gt_free"], e["gt"] = not used[e["gt"]], gt[e["gt"]]["id"]
                errors.append(e)
        for j, a in enumerate(gt):
            if not used[j]:
                false_neg[a["category_id"]] += 1
                if not usable[j]:
                    errors.append({"type": "Miss", "class": a["category_id"], "dt": None, "gt": a["id"]})
        if len(errors) > first:
            per_image[iid] = [{"type": e["type"], "dt": e["dt"], "gt": e["gt"]} for e in errors[first:]]
    base = mean_ap(points, num_gt)

    def fixed(kind: str) -> float:
        pts = {c: {k: v for k, v in d.items() if v[1]} for c, d in points.items()}  # the true positives
        gt_count = dict(num_gt)
        for e in errors:
            if e["type"] == "Miss":
                gt_count[e["class"]] -= e["type"] == kind
                continue
            if e["type"] != kind:
                if not e["ignored"]:
                    pts.setdefault(e["class"], {})[e["dt"]] = (e["score"], False)
            elif kind in ("Cls", "Loc") and e["gt_free"] and best[e["gt"]][1] == e["dt"]:
                pts.setdefault(e["fix"], {})[e["dt"]] = (e["score"], True)
        return mean_ap(pts, gt_count)

    dap = {kind: max(fixed(kind) - base, 0.0) for kind in ERROR_TYPES}
    no_fp = {c: {k: v for k, v in d.items() if v[1]} for c, d in points.items()}
    special = {
        "FalsePos": mean_ap(no_fp, num_gt) - base,
        "FalseNeg": mean_ap(points, {c: n - false_neg[c] for c, n in num_gt.items()}) - base,
    }
    counts = {kind: sum(e["type"] == kind for e in errors) for kind in ERROR_TYPES}
    return TideErrors(base, dap, special, counts, per_image)


def confusion_matrix(
    coco_gt: dict,
    results: list[dict],
    cat_ids: list[int],
    iou_type: str = "bbox",
    conf: float = 0.25,
    iou_thresh: float = 0.5,
) -> np.ndarray:
    """(K + 1, K + 1) counts, rows the predicted class, columns the true class, index K background (as ultralytics):
    predictions scoring >= ``conf`` are paired one-to-one with ground truth of any class at IoU >= ``iou_thresh``,
    highest IoU first; a ground truth left alone is a miss (row K), a prediction left alone a background false
    positive (column K), unless it lies in a crowd region (IoF >= ``iou_thresh``). ``cat_ids``: the classes in
    order."""
    index = {c: i for i, c in enumerate(cat_ids)}
    k = len(cat_ids)
    m = np.zeros((k + 1, k + 1), dtype=np.int64)
    gts, dts, geom = geometry(coco_gt, results, iou_type)
    for image in coco_gt["images"]:
        iid = image["id"]
        gt = [a for a in gts[iid] if not a.get("iscrowd", 0)]
        crowd = [a for a in gts[iid] if a.get("iscrowd", 0)]
        preds = [r for _, r in dts[iid] if _score(r, iou_type) >= conf]
        iou = pairwise_iou([geom(r, iid) for r in preds], [geom(a, iid) for a in gt], [False] * len(gt))
        pi, gi = np.nonzero(iou >= iou_thresh)
        order = np.argsort(-iou[pi, gi], kind="stable")
        taken_p, taken_g = set(), set()
        for i, j in zip(pi[order].tolist(), gi[order].tolist()):
            if i not in taken_p and j not in taken_g:
                taken_p.add(i)
                taken_g.add(j)
                m[index[preds[i]["category_id"]], index[gt[j]["category_id"]]] += 1
        for j, a in enumerate(gt):
            if j not in taken_g:
                m[k, index[a["category_id"]]] += 1
        free = [i for i in range(len(preds)) if i not in taken_p]
        in_crowd = np.zeros(len(free), dtype=bool)
        if crowd and free:
            iof = pairwise_iou([geom(preds[i], iid) for i in free], [geom(c, iid) for c in crowd], [True] * len(crowd))
            in_crowd = (iof >= iou_thresh).any(axis=1)
        for i, skip in zip(free, in_crowd.tolist()):
            if not skip:
                m[index[preds[i]["category_id"]], k] += 1
    return m
