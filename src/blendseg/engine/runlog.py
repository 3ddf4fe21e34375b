"""What a run shows and leaves in its folder besides checkpoints (ultralytics' layout, ecosystem.md §2.4):
``train_log.jsonl`` (every 20 iterations, evaluations, warnings), ``results.csv`` (one row per evaluation),
``results.png`` (loss and AP curves), ``log.txt`` (what the terminal showed), ``train_batch*.jpg`` (the first
augmented batches with their targets drawn). On a terminal progress is a bar; elsewhere (CI logs, nohup, SLURM) a
line every ``line_every_s`` seconds instead of a redraw per iteration.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
import time
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from ..dist import is_main_process


class RunLog:
    """Progress, ``train_log.jsonl``, ``results.csv`` / ``results.png`` on the main process (no-ops elsewhere)."""

    def __init__(
        self,
        out_dir: Path,
        budget: float,
        max_iter: int,
        start_it: int = 0,
        spent: float = 0.0,
        line_every_s: float = 30.0,
        tensorboard: bool = False,
    ) -> None:
        self.main, self.out_dir, self.budget, self.max_iter = is_main_process(), out_dir, budget, max_iter
        self.tb = tensorboard_writer(out_dir) if tensorboard and self.main else None
        self.file = open(out_dir / "train_log.jsonl", "a") if self.main else None  # noqa: SIM115
        self.lines = self.main and not sys.stderr.isatty()
        self.line_every_s, self.last_line = line_every_s, 0.0
        total, start = (int(budget), int(spent)) if budget > 0 else (max_iter, start_it)
        self.bar = tqdm(
            total=total,
            initial=start,
            unit="s" if budget > 0 else "it",
            disable=not self.main or self.lines,
            dynamic_ncols=True,
            mininterval=2,
        )
        self.sums: dict[str, float] = {}
        self.count = 0

    def step(self, it: int, elapsed: float, lr: float, losses: dict[str, Tensor], ips: float) -> None:
        if not self.main:
            return
        values = {k: round(float(v), 4) for k, v in losses.items()}
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.bar.set_postfix(it=it, loss=f"{values['loss']:.3f}", lr=f"{lr:.2e}", ips=f"{ips:.1f}")
        self.bar.update(1 if self.budget <= 0 else max(0, min(int(elapsed), self.bar.total) - self.bar.n))
        now = time.monotonic()
        if self.lines and (now - self.last_line >= self.line_every_s or it == 1):
            self.last_line = now
            goal = f"{elapsed / 60:.1f}/{self.budget / 60:.1f} min" if self.budget > 0 else f"{it}/{self.max_iter}"
            print(f"[{goal}] it {it}  loss {values['loss']:.3f}  lr {lr:.2e}  {ips:.1f} img/s", flush=True)
        if it % 20 == 0 or it == 1:
            self.write({"iteration": it, "time_s": round(elapsed, 1), "lr": lr, **values})
            if self.tb is not None:
                for k, v in values.items():
                    self.tb.add_scalar(f"train/{k}", v, it)
                self.tb.add_scalar("train/lr", lr, it)
                self.tb.add_scalar("train/images_per_s", ips, it)

    def evaluation(self, it: int, epoch: int, lr: float, elapsed: float, metrics: dict) -> None:
        """A ``results.csv`` row (mean losses since the previous row, lr, box / mask AP and AP50) and the curves."""
        if not self.main:
            return
        self.write({"iteration": it, "time_s": round(elapsed, 1), "eval": metrics})
        row = {"iteration": it, "epoch": epoch, "time_s": round(elapsed, 1), "lr": lr}
        row.update({k: round(v / max(self.count, 1), 4) for k, v in self.sums.items()})
        for kind, name in (("bbox", "box"), ("segm", "mask")):
            if kind in metrics:
                row[f"{name}_AP"], row[f"{name}_AP50"] = metrics[kind].get("AP"), metrics[kind].get("AP50")
        if "panoptic" in metrics:
            row["PQ"] = metrics["panoptic"].get("PQ")
        if self.tb is not None:
            for section in ("bbox", "segm", "panoptic"):
                for k, v in (metrics.get(section) or {}).items():
                    if isinstance(v, float) and "-" not in k:  # the summary numbers, not every class
                        self.tb.add_scalar(f"val/{section}/{k}", v, it)
        self.sums, self.count = {}, 0
        path = self.out_dir / "results.csv"
        rows = _read_csv(path)
        rows.append(row)
        fields = list(dict.fromkeys(k for r in rows for k in r))  # columns of every row, first-seen order
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            writer.writerows(rows)
        with contextlib.suppress(Exception):  # a figure must never end a run
            plot_results(self.out_dir)

    def image(self, tag: str, path: Path, it: int) -> None:
        """A picture the run saved (train_batch*.jpg) into TensorBoard too."""
        if self.tb is not None:
            add_image(self.tb, tag, path, it)

    def info(self, msg: str) -> None:
        if self.main:
            tqdm.write(msg)
            self.write({"info": msg})

    def warn(self, msg: str) -> None:
        if self.main:
            tqdm.write(msg, file=sys.stderr)
            self.write({"warning": msg})

    def write(self, record: dict) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.main:
            with contextlib.suppress(Exception):  # the curves of a run that never evaluated, too
                plot_results(self.out_dir)
        if self.file is not None:
            self.file.close()
            self.file = None


def tensorboard_writer(out_dir: Path):
    """A TensorBoard SummaryWriter on the run folder; a clear error naming the extra when TensorBoard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        from ..config import ConfigError

        raise ConfigError("log.tensorboard=true needs TensorBoard: pip install 'blendseg[tensorboard]'") from e
    return SummaryWriter(log_dir=str(out_dir))


def add_image(writer, tag: str, path: Path, it: int) -> None:
    import numpy as np
    from PIL import Image

    writer.add_image(tag, np.asarray(Image.open(path).convert("RGB")), it, dataformats="HWC")


def plot_results(out_dir: Path) -> Path:
    """``results.png`` (:func:`~blendseg.evaluation.plots.plot_training`): every loss term raw and smoothed, the
    learning rate (train_log.jsonl) and box / mask AP and PQ (results.csv) against iterations."""
    from ..evaluation.plots import enabled, plot_training

    if not enabled():
        return out_dir / "results.png"
    log, rows = _records(out_dir / "train_log.jsonl"), _read_csv(out_dir / "results.csv")
    return plot_training(log, rows, out_dir / "results.png")


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def save_train_batch(images, targets: list[dict], class_names: list[str], path: Path, max_images: int = 4) -> None:
    """The augmented images of a batch side by side with their target boxes and masks drawn (what the model is
    trained on), as ``path``."""
    from PIL import Image

    from ..structures import DenseMasks
    from ..vis import render_detections

    tiles = []
    for i, target in enumerate(targets[:max_images]):
        h, w = images.image_sizes[i]
        image = images.tensor[i, :, :h, :w].clamp(0, 255).to(torch.uint8)
        n = len(target["labels"])
        gt = _Targets(target["boxes"], torch.ones(n), target["labels"], None)
        if "masks" in target and target["masks"].shape[-2:] == (h, w):
            gt.masks = DenseMasks(target["masks"].bool())
        tiles.append(render_detections(image, gt, class_names, 0.0))
    if not tiles:
        return
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), max(t.height for t in tiles)))
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + 4
    canvas.save(path, quality=90)


class _Targets:
    """Ground truth shaped as detections for drawing."""

    def __init__(self, boxes: Tensor, scores: Tensor, labels: Tensor, masks) -> None:
        self.boxes, self.scores, self.labels, self.masks = boxes, scores, labels, masks


class Tee:
    """``log.txt``: what the terminal shows, appended to a file (progress-bar redraws reduced to their last state
    per line). A context manager over ``sys.stdout`` and ``sys.stderr``."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a")  # noqa: SIM115
        self.streams: list = []

    def __enter__(self) -> Tee:
        self.streams = [sys.stdout, sys.stderr]
        sys.stdout, sys.stderr = _TeeStream(sys.stdout, self.file), _TeeStream(sys.stderr, self.file)
        return self

    def __exit__(self, *exc) -> None:
        for s in (sys.stdout, sys.stderr):
            if isinstance(s, _TeeStream):
                s.flush_pending()
        sys.stdout, sys.stderr = self.streams
        self.file.close()


class _TeeStream:
    def __init__(self, stream, file) -> None:
        self.stream, self.file, self.pending = stream, file, ""

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.file.write(line.split("\r")[-1] + "\n")
        self.file.flush()
        return n

    def flush_pending(self) -> None:
        if self.pending.split("\r")[-1].strip():
            self.file.write(self.pending.split("\r")[-1] + "\n")
        self.pending = ""

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))
