"""Precision-recall and F1-confidence curves read from COCOeval's own accumulated arrays.

COCOeval's ``eval["precision"]`` and ``eval["scores"]`` are (T, R, K, A, M): T = 10 IoU thresholds 0.50:0.95, R = 101
recall thresholds, K classes, A = 4 area ranges (0: all), M = 3 max-detection limits (-1: 100). ``precision`` is
the interpolated (monotone envelope) precision at each recall threshold, -1 for a class without ground truth;
``scores`` the confidence of the detection at which that recall is first reached (0 beyond the last reached).
"""

from __future__ import annotations

import numpy as np

CONF_GRID = np.arange(101) / 100  # 0.00, 0.01, ... 1.00 exactly


def pr_curves(precision: np.ndarray, rec_thrs: np.ndarray, class_names: list[str]) -> dict:
    """``{"recall": [...], "AP50": {"all": [...], name: [...] or None}, "AP": {...}}``: precision against recall at
    IoU 0.5 and averaged over 0.50:0.95, per class (None: no instances) and the mean over classes with instances."""
    p = precision[:, :, :, 0, -1]  # (T, R, K)
    has = (p > -1).all(axis=(0, 1))
    out = {"recall": rec_thrs.tolist()}
    for name, curve in (("AP50", p[0]), ("AP", p.mean(axis=0))):  # (R, K)
        out[name] = {"all": curve[:, has].mean(axis=1).tolist() if has.any() else None}
        out[name].update({n: curve[:, k].tolist() if has[k] else None for k, n in enumerate(class_names)})
    return out


def f1_confidence(precision: np.ndarray, scores: np.ndarray, rec_thrs: np.ndarray, class_names: list[str]) -> dict:
    """F1 against the confidence threshold at IoU 0.5: at threshold c a class reaches the largest recall
    threshold whose detection scores >= c, with its precision there. ``{"conf": grid, "all": mean over classes
    with instances, name: per class or None, "best_conf", "best_f1"}``; best_conf is the highest threshold with
    the best mean F1 (the suggested ``--conf``; None where F1 is 0 everywhere)."""
    p, s = precision[0, :, :, 0, -1], scores[0, :, :, 0, -1]  # (R, K)
    r = np.asarray(rec_thrs)[:, None]
    f1 = np.where(p > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)  # (R, K)
    reached = (p > 0)[None] & (s[None] >= CONF_GRID[:, None, None])  # (C, R, K)
    last = np.where(reached.any(axis=1), reached.shape[1] - 1 - np.argmax(reached[:, ::-1], axis=1), -1)  # (C, K)
    curves = np.where(last >= 0, np.take_along_axis(f1, np.maximum(last, 0), axis=0), 0.0)  # (C, K)
    has = (p > -1).all(axis=0)
    out = {"conf": CONF_GRID.tolist(), "best_conf": None, "best_f1": None, "all": None}
    if has.any() and curves[:, has].max() > 0:  # an all-zero curve suggests no threshold
        mean = curves[:, has].mean(axis=1)
        best = len(mean) - 1 - int(np.argmax(mean[::-1]))  # the highest threshold with the best F1
        out.update(all=mean.tolist(), best_conf=float(CONF_GRID[best]), best_f1=float(mean[best]))
    out.update({n: curves[:, k].tolist() if has[k] else None for k, n in enumerate(class_names)})
    return out
