"""Ultralytics' YOLO segmentation layout, read as COCO instances (so training, ``data check`` and COCO evaluation see
one format) and written from them (``blendseg data convert``: :mod:`blendseg.data.convert`).

An ultralytics data.yaml names image folders (or a .txt list of images) and the classes::

    path: datasets/mydata
    train: images/train
    val: images/val
    names: {0: cat, 1: dog}

Each image's labels are in ``labels/`` where its path has ``images/`` (the last ``/images/`` of the path becomes
``/labels/``, the suffix ``.txt``), one instance a line: ``class x1 y1 x2 y2 ...`` (a polygon of at least 3 points,
coordinates normalised to [0, 1] by the image's width and height) or ``class cx cy w h`` (a box). An image without a
label file is a background image (no instances).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .check import Problem
from .images import IMAGE_SUFFIXES, image_size

EPS = 1e-6  # normalised coordinates may round a hair past 0 or 1


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` of the image's path becomes ``/labels/``, the suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def list_images(source: Path, root: Path) -> list[Path]:
    """The images of a split: every image file below a folder, or the lines of a .txt list (relative to the
    dataset root, or absolute), sorted."""
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if source.suffix == ".txt" and source.is_file():
        lines = [ln.strip() for ln in source.read_text().splitlines() if ln.strip()]
        return sorted(root / ln for ln in lines)
    return []


def parse_line(line: str, num_classes: int, width: int, height: int) -> tuple[int, list[float]] | str:
    """(class, polygon in pixels x1 y1 x2 y2 ...) of a label line, or what is wrong with it."""
    fields = line.split()
    try:
        cls = int(fields[0])
        values = [float(v) for v in fields[1:]]
    except ValueError:
        return f"not numbers: {line.strip()[:60]!r}"
    if not 0 <= cls < num_classes:
        return f"class index {cls} is not in names (0..{num_classes - 1})"
    if len(values) % 2:
        return f"odd number of coordinates ({len(values)})"
    if len(values) < 4 or not all(math.isfinite(v) for v in values):
        return f"{len(values)} coordinates: a box needs 4 (cx cy w h), a polygon at least 6 (3 points)"
    if min(values) < -EPS or max(values) > 1 + EPS:
        return f"coordinates outside [0, 1] (from {min(values):.4g} to {max(values):.4g}): not normalised"
    if len(values) == 4:  # a box
        cx, cy, w, h = values
        values = [cx - w / 2, cy - h / 2, cx + w / 2, cy - h / 2, cx + w / 2, cy + h / 2, cx - w / 2, cy + h / 2]
    return cls, [min(max(v, 0.0), 1.0) * (width if i % 2 == 0 else height) for i, v in enumerate(values)]


def _area(poly: list[float], width: int, height: int) -> float:
    """COCO's area of the polygon: its rasterised pixels (what evaluation's small / medium / large ranges use)."""
    from ..ops.rle import area, segm_to_rle

    return area(segm_to_rle([poly], height, width))


def yolo_to_coco(source: str | os.PathLike, names: list[str], root: str | os.PathLike) -> tuple[dict, list[Problem]]:
    """A COCO instances dict of a YOLO split (category ids 1..K for classes 0..K-1; ``file_name`` relative to
    ``root``) and the problems: each bad label line (error, with file and line), unreadable images (skipped),
    background images and label files without an image (warnings)."""
    source, root = Path(source), Path(root)
    probs: list[Problem] = []
    images = list_images(source, root)
    if not images:
        probs.append(Problem("error", str(source), "no images (a folder of images or a .txt list of them)"))
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": n} for i, n in enumerate(names)]}
    background, labelled = 0, set()
    for image_id, path in enumerate(images, 1):
        try:
            width, height = image_size(path)
        except (OSError, ValueError) as e:
            probs.append(Problem("warning", str(path), f"cannot read the image, skipped ({type(e).__name__}: {e})"))
            continue
        name = os.path.relpath(path, root) if path.is_relative_to(root) else str(path)
        coco["images"].append({"id": image_id, "file_name": name, "width": width, "height": height})
        labels = label_path(path)
        if not labels.is_file():
            background += 1
            continue
        labelled.add(labels.resolve())
        try:
            text = labels.read_text()
        except (OSError, UnicodeDecodeError) as e:
            probs.append(Problem("error", str(labels), f"cannot read it as text ({type(e).__name__}: {e})"))
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parsed = parse_line(line, len(names), width, height)
            if isinstance(parsed, str):
                probs.append(Problem("error", f"{labels}: line {n}", parsed))
                continue
            cls, poly = parsed
            xs, ys = poly[0::2], poly[1::2]
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": cls + 1,
                    "bbox": box,
                    "segmentation": [poly],
                    "area": _area(poly, width, height),
                    "iscrowd": 0,
                }
            )
    if background:
        probs.append(Problem("warning", str(source), f"{background} image(s) without a label file: background"))
    orphans = _orphan_labels(images, labelled)
    if orphans:
        shown = ", ".join(str(p) for p in orphans[:5]) + (f" and {len(orphans) - 5} more" if len(orphans) > 5 else "")
        probs.append(Problem("warning", str(source), f"{len(orphans)} label file(s) without an image: {shown}"))
    return coco, probs


def _orphan_labels(images: list[Path], labelled: set[Path]) -> list[Path]:
    folders = {label_path(p).parent for p in images}
    found = {p.resolve() for d in folders if d.is_dir() for p in d.glob("*.txt")}
    return sorted(found - labelled)


def merge_rings(rings: list[list[float]]) -> list[float]:
    """One polygon for an instance of several rings, as ultralytics' converter writes them: each ring joined to the
    next at their closest points and walked back, so the joins enclose no area."""
    rings = [np.asarray(r, dtype=np.float64).reshape(-1, 2) for r in rings if len(r) >= 6]
    if len(rings) <= 1:
        return rings[0].ravel().tolist() if rings else []
    links = []  # (index in ring i, index in ring i + 1) of their closest points
    for a, b in zip(rings, rings[1:]):
        d = ((a[:, None] - b[None]) ** 2).sum(-1)
        links.append(divmod(int(d.argmin()), len(b)))
    out: list[np.ndarray] = []
    for i, ring in enumerate(rings):  # forward: enter at the previous link, go to the next one
        start = links[i - 1][1] if i > 0 else 0
        ring = np.roll(ring, -start, axis=0)
        if i == len(rings) - 1:
            out.append(np.concatenate([ring, ring[:1]]))
        else:
            stop = (links[i][0] - start) % len(ring)
            out.append(ring[: stop + 1])
    for i in range(len(rings) - 2, -1, -1):  # back along the same joins, closing each ring
        start = links[i - 1][1] if i > 0 else 0
        ring = np.roll(rings[i], -start, axis=0)
        stop = (links[i][0] - start) % len(ring)
        out.append(np.concatenate([ring[stop:], ring[:1]]))
    return np.concatenate(out).ravel().tolist()


def mask_outline(mask: np.ndarray) -> list[list[float]]:
    """The outer outlines of a binary (h, w) mask as polygons along the pixel edges (x y x y ..., pixel corner
    coordinates), one per region; holes are left out (a YOLO polygon has none)."""
    m = np.pad(mask.astype(bool), 1)
    nxt: dict[tuple[int, int], list[tuple[int, int]]] = {}
    ys, xs = np.nonzero(m)
    for y, x in zip(ys.tolist(), xs.tolist()):  # each foreground pixel's edges on background, clockwise (y down)
        x0, y0 = x - 1, y - 1  # back to the unpadded pixel corners
        if not m[y - 1, x]:
            nxt.setdefault((x0, y0), []).append((x0 + 1, y0))
        if not m[y, x + 1]:
            nxt.setdefault((x0 + 1, y0), []).append((x0 + 1, y0 + 1))
        if not m[y + 1, x]:
            nxt.setdefault((x0 + 1, y0 + 1), []).append((x0, y0 + 1))
        if not m[y, x - 1]:
            nxt.setdefault((x0, y0 + 1), []).append((x0, y0))
    loops = []
    while nxt:
        start = next(iter(nxt))
        loop, p = [start], start
        while True:
            q = nxt[p].pop()
            if not nxt[p]:
                del nxt[p]
            if q == start:
                break
            loop.append(q)
            p = q
        pts = np.asarray(loop, dtype=np.float64)
        keep = np.any(np.roll(pts, 1, 0) - pts != pts - np.roll(pts, -1, 0), axis=1)  # corners only
        pts = pts[keep]
        area = np.dot(pts[:, 0], np.roll(pts[:, 1], -1)) - np.dot(pts[:, 1], np.roll(pts[:, 0], -1))
        if area > 0 and len(pts) >= 3:  # clockwise in image coordinates: an outer outline (holes turn the other way)
            loops.append(pts.ravel().tolist())
    return loops


def coco_to_yolo_lines(anns: list[dict], image: dict, cat_index: dict[int, int]) -> tuple[list[str], int]:
    """The label lines of one COCO image's annotations (polygons, several rings merged; RLE masks by their outer
    outlines; crowd annotations left out: YOLO has none), and how many were left out."""
    from ..ops.rle import decode

    w, h = image["width"], image["height"]
    lines, left_out = [], 0
    for a in anns:
        segm = a.get("segmentation")
        if a.get("iscrowd", 0) or not segm:
            left_out += 1
            continue
        poly = merge_rings(segm if isinstance(segm, list) else mask_outline(decode(segm, h, w)))
        if len(poly) < 6:
            left_out += 1
            continue
        coords = " ".join(f"{v / (w if i % 2 == 0 else h):.6f}" for i, v in enumerate(poly))
        lines.append(f"{cat_index[a['category_id']]} {coords}")
    return lines, left_out
