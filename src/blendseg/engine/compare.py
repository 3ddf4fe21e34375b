"""``blendseg compare RUN_DIR RUN_DIR ...``: the final metrics of runs in one table and their curves in one figure
(the loss and the validation AP against iterations), read from what each run folder holds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .runlog import _read_csv, _records


class RunFolderError(ValueError):
    """A folder that cannot be compared, named in the message."""


COLUMNS = (
    ("box AP", "bbox", "AP"),
    ("box AP50", "bbox", "AP50"),
    ("mask AP", "segm", "AP"),
    ("mask AP50", "segm", "AP50"),
    ("PQ", "panoptic", "PQ"),
)


def read_run(path: str | Path) -> dict:
    """A run folder's log, evaluations and final metrics; RunFolderError when it is no run or never evaluated."""
    folder = Path(path)
    if not (folder / "train_log.jsonl").is_file() or not (folder / "config.yaml").is_file():
        raise RunFolderError(f"{folder}: not a run folder (no train_log.jsonl and config.yaml)")
    rows = _read_csv(folder / "results.csv")
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
    if not rows and not any(k in metrics for _, k, _ in COLUMNS):
        raise RunFolderError(f"{folder}: the run has no evaluation (results.csv / metrics.json)")
    log = _records(folder / "train_log.jsonl")
    steps = [r for r in log if "loss" in r]
    classes = sorted(
        {k[3:] for section in metrics.values() if isinstance(section, dict) for k in section if k.startswith("AP-")}
    )
    return {
        "name": folder.name if folder.name not in ("", ".") else str(folder),
        "path": folder,
        "rows": rows,
        "metrics": metrics,
        "steps": steps,
        "classes": classes,
    }


def compare(paths: list[str | Path], out_dir: str | Path) -> tuple[str, Path]:
    """The table (markdown, also written to OUT/compare.md) and OUT/compare.png of two or more runs."""
    if len(paths) < 2:
        raise RunFolderError("compare needs two or more run folders")
    runs = [read_run(p) for p in paths]
    names = [r["name"] for r in runs]
    if len(set(names)) < len(names):  # same folder names under different parents: use the paths
        for r in runs:
            r["name"] = str(r["path"])
    if len({tuple(r["classes"]) for r in runs if r["classes"]}) > 1:
        print(
            "warning: the runs were evaluated on different classes (different datasets?): "
            + "; ".join(f"{r['name']}: {', '.join(r['classes'])}" for r in runs),
            file=sys.stderr,
        )
    cols = [c for c in COLUMNS if any(c[1] in r["metrics"] for r in runs)]
    head = ["run", "iterations", "minutes", *[c[0] for c in cols], "best.pt"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        last = r["steps"][-1] if r["steps"] else {}
        best = r["metrics"].get("best") or {}
        final = r["rows"][-1] if r["rows"] else last  # the last evaluation: the end of the run
        it, spent = final.get("iteration", last.get("iteration", "")), float(final.get("time_s", 0) or 0)
        cells = [r["name"], str(it), f"{spent / 60:.1f}" if final else ""]
        for _, section, key in cols:
            v = (r["metrics"].get(section) or {}).get(key)
            cells.append(f"{v:.1f}" if isinstance(v, (int, float)) else "")
        cells.append(f"{best['metric']} {best['value']:.1f} @ {best['iteration']}" if best.get("metric") else "")
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(table + "\n")
    from ..evaluation.plots import plot_compare

    return table, plot_compare(runs, out / "compare.png")
