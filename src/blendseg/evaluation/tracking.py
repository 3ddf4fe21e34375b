"""Tracking metrics on masks: HOTA, IDF1 and MOTA by TrackEval (the MOTChallenge / KITTI MOTS benchmarks' own
code, ``pip install 'blendseg[track]'``), and a temporal-stability score of the masks themselves.

TrackEval's MOTS readers know one or two classes (pedestrians, cars) and read files from its own folder layout, so
:func:`evaluate_mots` does what its ``MOTSChallenge.get_preprocessed_seq_data`` does for every class of ours (no
ignore regions: the synthetic ground truth has none): per class and frame the ground truth's and the tracker's
objects, their mask IoUs (pycocotools on the RLEs, as TrackEval computes them), ids relabelled from 0; then
TrackEval's ``HOTA``, ``CLEAR`` and ``Identity`` score each sequence and class, combine the sequences, and combine
the classes by detections (every object counts once, whatever its class) and by class (each class counts once).

:func:`temporal_stability` (YOLACT++ §7.4's claim, measured): each true object is matched in every frame to the
prediction of its class with the highest mask IoU (at least ``iou``); over pairs of consecutive frames where it is
matched in both,

- ``still``: where its true mask is unchanged, the mean IoU of the two predicted masks (1.0: no flicker);
- ``change_error``: where it moved, the mean |predicted change - true change|, change = 1 - IoU of consecutive
  masks (0: the prediction changes exactly as much as the object).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..data.mots import MotsObject
from ..errors import MissingExtra

# the headline columns, as TrackEval's tables name them (HOTA's are means over its 19 localisation thresholds)
COLUMNS = ("HOTA", "DetA", "AssA", "IDF1", "MOTA", "IDSW", "MT", "ML")


def _trackeval():
    try:
        from pycocotools import mask as mask_utils
        from trackeval.metrics import CLEAR, HOTA, Identity
    except ImportError:
        raise MissingExtra("tracking metrics need TrackEval: pip install 'blendseg[track]'") from None
    quiet = {"PRINT_CONFIG": False}
    return [HOTA(), CLEAR(quiet), Identity(quiet)], mask_utils


def _ious(mask_utils, gt: list[MotsObject], pred: list[MotsObject]) -> np.ndarray:
    """(len(gt), len(pred)) mask IoU."""
    if not gt or not pred:
        return np.zeros((len(gt), len(pred)))
    return np.asarray(mask_utils.iou([o.rle for o in gt], [o.rle for o in pred], [False] * len(pred))).reshape(
        len(gt), len(pred)
    )


def _by_frame(objects: list[MotsObject]) -> dict[int, list[MotsObject]]:
    out: dict[int, list[MotsObject]] = defaultdict(list)
    for o in objects:
        out[o.frame].append(o)
    return out


def sequence_data(mask_utils, gt: list[MotsObject], pred: list[MotsObject], cls: int, frames: int) -> dict:
    """TrackEval's per-sequence, per-class input (``num_timesteps``, ``gt_ids``, ``tracker_ids``,
    ``similarity_scores``, counts), ids relabelled from 0; a frame with two objects of one id is an error."""
    gt_f, pred_f = _by_frame([o for o in gt if o.class_id == cls]), _by_frame([o for o in pred if o.class_id == cls])
    data: dict = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    relabel = {"gt_ids": {}, "tracker_ids": {}}
    for t in range(1, frames + 1):
        g, p = gt_f.get(t, []), pred_f.get(t, [])
        for key, objs in (("gt_ids", g), ("tracker_ids", p)):
            ids = [o.track_id for o in objs]
            if len(set(ids)) != len(ids):
                raise ValueError(f"frame {t}: two objects share an id in the {key[:-4]}'s class {cls}")
            data[key].append(np.array([relabel[key].setdefault(i, len(relabel[key])) for i in ids], dtype=int))
        data["similarity_scores"].append(_ious(mask_utils, g, p))
    data.update(
        num_timesteps=frames,
        num_gt_ids=len(relabel["gt_ids"]),
        num_tracker_ids=len(relabel["tracker_ids"]),
        num_gt_dets=sum(len(x) for x in data["gt_ids"]),
        num_tracker_dets=sum(len(x) for x in data["tracker_ids"]),
    )
    return data


def evaluate_mots(sequences: dict[str, tuple[list[MotsObject], list[MotsObject]]]) -> dict:
    """``{sequence: (ground truth, predictions)}`` -> ``{"all": row, "class_averaged": row, "classes": {class id:
    row}}``, a row holding :data:`COLUMNS` (percentages, IDSW / MT / ML counts). Classes are the ground truth's."""
    metrics, mask_utils = _trackeval()
    classes = sorted({o.class_id for gt, _ in sequences.values() for o in gt})
    per_class: dict[int, dict] = {}
    for cls in classes:
        per_seq = defaultdict(dict)
        for name, (gt, pred) in sequences.items():
            frames = max([o.frame for o in gt + pred], default=0)
            data = sequence_data(mask_utils, gt, pred, cls, frames)
            for m in metrics:
                per_seq[m.get_name()][name] = m.eval_sequence(data)
        per_class[cls] = {m.get_name(): m.combine_sequences(per_seq[m.get_name()]) for m in metrics}
    out = {"classes": {c: _row(r) for c, r in per_class.items()}}
    for key, how in (("all", "combine_classes_det_averaged"), ("class_averaged", "combine_classes_class_averaged")):
        out[key] = _row({m.get_name(): getattr(m, how)({c: r[m.get_name()] for c, r in per_class.items()})
                         for m in metrics})  # fmt: skip
    return out


def _row(res: dict) -> dict:
    hota, clear, ident = res["HOTA"], res["CLEAR"], res["Identity"]
    pct = lambda v: round(100 * float(np.mean(v)), 2)  # noqa: E731
    return {
        "HOTA": pct(hota["HOTA"]),
        "DetA": pct(hota["DetA"]),
        "AssA": pct(hota["AssA"]),
        "IDF1": pct(ident["IDF1"]),
        "MOTA": pct(clear["MOTA"]),
        "IDSW": int(clear["IDSW"]),
        "MT": int(clear["MT"]),
        "ML": int(clear["ML"]),
    }


def format_rows(rows: dict[str, dict]) -> str:
    """A markdown table of ``{name: row}``."""
    lines = ["| | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{r[c]:g}" for c in COLUMNS) + " |" for name, r in rows.items()]
    return "\n".join(lines)


@dataclass(frozen=True)
class Stability:
    """:func:`temporal_stability`'s result: ``still`` (mean predicted IoU over unchanged pairs) and ``change_error``
    (mean |predicted - true change| over changed pairs), each with its pair count; NaN where there are none."""

    still: float
    still_pairs: int
    change_error: float
    moving_pairs: int


def temporal_stability(sequences: dict[str, tuple[list[MotsObject], list[MotsObject]]], iou: float = 0.5) -> Stability:
    """``{sequence: (ground truth, predictions)}`` -> the pooled scores of the module's docstring. Predictions'
    ids are not used: this measures the masks, not the tracker."""
    _, mask_utils = _trackeval()
    still, change = [], []
    for gt, pred in sequences.values():
        s, c = _stability_pairs(mask_utils, gt, pred, iou)
        still += s
        change += c
    mean = lambda v: round(float(np.mean(v)), 4) if v else float("nan")  # noqa: E731
    return Stability(mean(still), len(still), mean(change), len(change))


def _stability_pairs(mask_utils, gt: list[MotsObject], pred: list[MotsObject], iou: float) -> tuple[list, list]:
    """(predicted IoUs of unchanged pairs, |predicted - true change| of changed pairs) of one sequence."""
    gt_f, pred_f = _by_frame(gt), _by_frame(pred)
    matched: dict[tuple[int, int], MotsObject] = {}  # (frame, true id) -> its prediction
    for t, objs in gt_f.items():
        preds = pred_f.get(t, [])
        ious = _ious(mask_utils, objs, preds)
        for i, o in enumerate(objs):
            same = [j for j, p in enumerate(preds) if p.class_id == o.class_id]
            if same:
                j = max(same, key=lambda j: ious[i, j])
                if ious[i, j] >= iou:
                    matched[(t, o.track_id)] = preds[j]
    truth = {(o.frame, o.track_id): o for o in gt}
    still, change = [], []
    for (t, tid), p in matched.items():
        q = matched.get((t + 1, tid))
        if q is None:
            continue
        a, b = truth[(t, tid)], truth[(t + 1, tid)]
        pred_iou = float(_ious(mask_utils, [p], [q])[0, 0])
        if a.rle["counts"] == b.rle["counts"]:
            still.append(pred_iou)
        else:
            change.append(abs(pred_iou - float(_ious(mask_utils, [a], [b])[0, 0])))
    return still, change
