"""The figures a run and an evaluation leave, drawn with matplotlib (its object API: no pyplot state, no display
needed): precision-recall and F1-confidence curves, confusion matrices, the training curves (results.png) and the
comparison of runs. Every figure carries its title, axis labels with units, values on the axes and a legend."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def enabled() -> bool:
    """False where ``BLENDSEG_PLOTS=0``: runs and evaluations then write their numbers and files but no figures
    (a test suite's hundred tiny runs save about a second a figure; ultralytics' ``plots=False``)."""
    return os.environ.get("BLENDSEG_PLOTS", "1") != "0"


MAX_CLASS_LINES = 20  # more classes than this: the per-class lines are drawn without legend entries
OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": "small"}  # a legend beside the curves


def _figure(ncols: int, width: float = 6.0, height: float = 5.0):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _class_lines(ax, x, curves: dict, label) -> None:
    names = [n for n, c in curves.items() if n != "all" and c is not None]
    for n in names:
        ax.plot(x, curves[n], linewidth=1, alpha=0.7, label=label(n) if len(names) <= MAX_CLASS_LINES else None)


def plot_pr(curves: dict, ap: dict, title: str, path: Path) -> Path:
    """Precision against recall at IoU 0.5 and averaged over 0.50:0.95 (from :func:`~.curves.pr_curves`), per class
    (its AP in the legend) and over all classes (bold); ``ap``: the metrics of the same IoU type."""
    fig, axes = _figure(2, 7.5)
    for ax, key, name in zip(axes, ("AP50", "AP"), ("IoU 0.50", "IoU 0.50:0.95 (mean)")):
        cls = curves[key]
        per_class = {n: v for n, v in cls.items() if n != "all"}
        ap_of = (lambda n: f"{n} {ap.get(f'AP-{n}') or 0:.1f}") if key == "AP" else (lambda n: n)
        _class_lines(ax, curves["recall"], per_class, ap_of)
        if cls["all"] is not None:
            value = ap.get(key)
            ax.plot(
                curves["recall"],
                cls["all"],
                color="black",
                linewidth=3,
                label=f"all classes, {key} {value:.1f}" if value is not None else "all classes",
            )
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=f"{title}: {name}")
        ax.grid(alpha=0.3)
        ax.legend(**OUTSIDE)
    fig.savefig(path, dpi=100)
    return path


def plot_f1(f1: dict, title: str, path: Path) -> Path:
    """F1 against the confidence threshold (from :func:`~.curves.f1_confidence`), the best mean F1 marked."""
    fig, (ax,) = _figure(1, 8.5)
    _class_lines(
        ax, f1["conf"], {n: v for n, v in f1.items() if n not in ("conf", "all", "best_conf", "best_f1")}, lambda n: n
    )
    if f1["all"] is not None:
        ax.plot(
            f1["conf"],
            f1["all"],
            color="black",
            linewidth=3,
            label=f"all classes: best F1 {f1['best_f1']:.2f} at conf {f1['best_conf']:.2f}",
        )
        ax.axvline(f1["best_conf"], color="black", linestyle="--", linewidth=1)
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="confidence threshold (--conf)",
        ylabel="F1 at IoU 0.50",
        title=f"{title}: F1 against confidence",
    )
    ax.grid(alpha=0.3)
    ax.legend(**OUTSIDE)
    fig.savefig(path, dpi=100)
    return path


def plot_confusion(matrix: np.ndarray, names: list[str], title: str, conf: float, path: Path) -> Path:
    """Counts and column-normalised (per true class) confusion matrices, the background last."""
    labels = [*names, "background"]
    n = len(labels)
    size = min(max(4.0, 0.5 * n + 2.5), 16.0)
    fig, axes = _figure(2, size, size * 0.85)
    cols = matrix.sum(axis=0, keepdims=True)
    normalised = np.divide(matrix, cols, out=np.zeros(matrix.shape), where=cols > 0)
    for ax, values, kind in zip(axes, (matrix, normalised), ("counts", "fraction of each true class")):
        im = ax.imshow(values, cmap="Blues", vmin=0, vmax=max(values.max(), 1e-9))
        if n <= 30:
            for i in range(n):
                for j in range(n):
                    v = values[i, j]
                    if v:
                        text = f"{v:d}" if values.dtype.kind == "i" else f"{v:.2f}"
                        ax.text(
                            j,
                            i,
                            text,
                            ha="center",
                            va="center",
                            fontsize="small",
                            color="white" if v > 0.6 * values.max() else "black",
                        )
        ax.set_xticks(range(n), labels, rotation=90 if n > 8 else 45, ha="right" if n <= 8 else "center")
        ax.set_yticks(range(n), labels)
        ax.set(xlabel="true class", ylabel="predicted class", title=kind)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"{title} confusion matrix: predictions with conf >= {conf:.2f} paired at IoU >= 0.5")
    fig.savefig(path, dpi=100)
    return path


def smooth(values: list[float], fraction: float = 0.1) -> list[float]:
    """A centred moving average over ``fraction`` of the points (at least 1 either side; fewer at the ends), so
    the smoothed line neither lags behind the logged one nor leaves the range it covers (an exponential average
    over a few dozen logged points trails a falling loss by a long way)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 3:
        return v.tolist()
    half = max(1, int(len(v) * fraction / 2))
    csum = np.concatenate([[0.0], np.cumsum(v)])
    lo = np.clip(np.arange(len(v)) - half, 0, None)
    hi = np.clip(np.arange(len(v)) + half + 1, None, len(v))
    return ((csum[hi] - csum[lo]) / (hi - lo)).tolist()


def plot_training(log: list[dict], evaluations: list[dict], path: Path) -> Path:
    """``results.png``: one panel per loss term (raw and smoothed), the learning rate, and box / mask AP and PQ
    against iterations. ``log``: train_log.jsonl records with losses; ``evaluations``: results.csv rows."""
    steps = [r for r in log if "loss" in r]
    terms = [k for k in dict.fromkeys(k for r in steps for k in r) if k == "loss" or k.startswith("loss_")]
    metrics = [m for m in ("box_AP", "mask_AP", "PQ") if any(r.get(m) not in (None, "") for r in evaluations)]
    panels = len(terms) + 2
    ncols = min(panels, 4)
    nrows = -(-panels // ncols)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(panels)]
    for ax, term in zip(axes, terms):
        pts = [(r["iteration"], r[term]) for r in steps if term in r]
        x, y = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(x, y, linewidth=1, alpha=0.4, label="logged")
        ax.plot(x, smooth(y), linewidth=2, label="smoothed")
        ax.set(title=term, xlabel="iteration", ylabel="loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small")
    ax = axes[len(terms)]
    ax.plot([r["iteration"] for r in steps], [r["lr"] for r in steps], linewidth=2)
    ax.set(title="learning rate", xlabel="iteration", ylabel="lr")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    ax.grid(alpha=0.3)
    ax = axes[-1]
    for m in metrics:
        pts = [(int(r["iteration"]), float(r[m])) for r in evaluations if r.get(m) not in (None, "")]
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", linewidth=2, label=m.replace("_", " "))
        ax.annotate(
            f"{pts[-1][1]:.1f}",
            pts[-1],
            textcoords="offset points",
            xytext=(-6, 6),
            ha="right",
            color=line[0].get_color(),
        )
    ax.set(title="validation", xlabel="iteration", ylabel="AP / PQ (%)")
    if steps:
        ax.set_xlim(0, max(r["iteration"] for r in steps) * 1.03)
    ax.grid(alpha=0.3)
    if metrics:
        ax.legend(fontsize="small")
        if len(evaluations) == 1:
            ax.text(
                0.5,
                0.06,
                "one evaluation, at the end of training",
                ha="center",
                transform=ax.transAxes,
                fontsize="small",
                color="0.4",
            )
    else:
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(path, dpi=90)
    return path


def plot_compare(runs: list[dict], path: Path) -> Path:
    """Two or more runs (:func:`~blendseg.engine.compare.read_run`): the total loss (smoothed) and box / mask AP
    (PQ) against iterations, one colour per run."""
    metrics = [
        m for m in ("box_AP", "mask_AP", "PQ") if any(r2.get(m) not in (None, "") for r in runs for r2 in r["rows"])
    ]
    fig, axes = _figure(1 + max(len(metrics), 1), 5.0, 4.0)
    for k, r in enumerate(runs):
        color = f"C{k % 10}"
        pts = [(s["iteration"], s["loss"]) for s in r["steps"]]
        if pts:
            axes[0].plot([p[0] for p in pts], smooth([p[1] for p in pts]), color=color, linewidth=2, label=r["name"])
        for ax, m in zip(axes[1:], metrics):
            vals = [(int(row["iteration"]), float(row[m])) for row in r["rows"] if row.get(m) not in (None, "")]
            if vals:
                ax.plot(
                    [v[0] for v in vals],
                    [v[1] for v in vals],
                    color=color,
                    marker="o",
                    linewidth=2,
                    label=f"{r['name']} {vals[-1][1]:.1f}",
                )
    axes[0].set(title="total loss (smoothed)", xlabel="iteration", ylabel="loss")
    for ax, m in zip(axes[1:], metrics):
        ax.set(title=m.replace("_", " "), xlabel="iteration", ylabel=f"{m.replace('_', ' ')} (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    fig.savefig(path, dpi=100)
    return path
