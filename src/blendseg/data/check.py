"""Validation of COCO instance annotations: every problem with its annotation / image id, no tracebacks."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError  # raised here; importable from here as before
from .images import read_image


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" | "warning"
    where: str  # file, plus annotation / image id
    message: str

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.where}: {self.message}"


def _num_list(x: Any, n: int | None = None) -> bool:
    ok = isinstance(x, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x)
    return ok and (n is None or len(x) == n)


def load_json(path: str | os.PathLike) -> tuple[dict | None, list[Problem]]:
    """Parse the file; a problem instead of an exception when it is missing or not COCO-shaped JSON."""
    where = str(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None, [Problem("error", where, "file not found")]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, [Problem("error", where, f"not valid JSON ({e})")]
    if not isinstance(data, dict):
        return None, [Problem("error", where, "top level is not a JSON object")]
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        return None, [Problem("error", where, f"missing or non-list key(s): {', '.join(missing)}")]
    return data, []


def check_coco(
    data: dict, where: str, images_dir: str | os.PathLike | None = None, decode: bool = True
) -> list[Problem]:
    """Check a parsed COCO dict; with ``images_dir`` also that every image exists and, with ``decode``, that it
    decodes in full and has its size (``data check``; training only checks existence and skips unreadable files
    when it meets them)."""
    probs: list[Problem] = []
    err = lambda w, m: probs.append(Problem("error", f"{where}: {w}", m))  # noqa: E731
    cat_ids: set = set()
    for c in data["categories"]:
        cid = c.get("id") if isinstance(c, dict) else None
        if not isinstance(cid, int):
            err("categories", f"category without an integer id: {c!r}")
        elif cid in cat_ids:
            err(f"category id {cid}", "duplicated category id")
        cat_ids.add(cid)
    images: dict[int, dict] = {}
    for im in data["images"]:
        iid = im.get("id") if isinstance(im, dict) else None
        if not isinstance(iid, int):
            err("images", f"image without an integer id: {im!r}"[:200])
            continue
        if iid in images:
            err(f"image id {iid}", "duplicated image id")
        bad = [k for k in ("file_name", "height", "width") if k not in im]
        if bad:
            err(f"image id {iid}", f"missing {', '.join(bad)}")
        images[iid] = im
    ann_ids: set = set()
    for a in data["annotations"]:
        if not isinstance(a, dict):
            err("annotations", f"annotation is not an object: {a!r}"[:200])
            continue
        aid, iid = a.get("id"), a.get("image_id")
        w = f"annotation id {aid} (image id {iid})"
        if aid in ann_ids:
            err(w, "duplicated annotation id")
        ann_ids.add(aid)
        im = images.get(iid)
        if im is None:
            err(w, "image_id refers to no image")
        if a.get("category_id") not in cat_ids:
            err(w, f"unknown category_id {a.get('category_id')!r}")
        _check_geometry(a, im, w, err)
    if images_dir is not None:
        _check_files(images, Path(images_dir), where, err, decode)
    return probs


def _check_geometry(a: dict, im: dict | None, w: str, err) -> None:
    box = a.get("bbox")
    if not _num_list(box, 4):
        err(w, f"bbox is not 4 numbers: {box!r}")
    else:
        x, y, bw, bh = box
        if bw <= 0 or bh <= 0:
            err(w, f"zero-area box {box}")
        elif im is not None and isinstance(im.get("width"), int) and isinstance(im.get("height"), int):
            W, H = im["width"], im["height"]
            if x < -1 or y < -1 or x + bw > W + 1 or y + bh > H + 1:
                err(w, f"box {box} lies outside the {W}x{H} image")
    seg = a.get("segmentation")
    if seg is None:
        return  # box-only annotation: allowed for detection
    if isinstance(seg, list):
        if not seg:
            err(w, "empty polygon list")
        for poly in seg:
            if not _num_list(poly) or len(poly) % 2:
                err(w, "polygon is not a flat list of x, y numbers")
            elif len(poly) < 6:
                err(w, f"polygon with {len(poly) // 2} point(s) (< 3)")
    elif isinstance(seg, dict):
        size = seg.get("size")
        if not _num_list(size, 2) or "counts" not in seg:
            err(w, "RLE without size [h, w] and counts")
        elif im is not None and list(size) != [im.get("height"), im.get("width")]:
            err(w, f"RLE size {size} differs from the image's {[im.get('height'), im.get('width')]}")
    else:
        err(w, f"segmentation is neither polygons nor RLE: {type(seg).__name__}")


def _decode(path: str) -> tuple[int, int] | str:
    """(width, height) of a fully decoded image (as training reads it), or the reason it cannot be read."""
    try:
        image = read_image(path)
    except Exception as e:  # any decoder failure is the file's problem
        return str(e).removeprefix(f"{path}: ")
    return int(image.shape[-1]), int(image.shape[-2])


def _check_files(
    images: dict[int, dict], root: Path, where: str, err, decode: bool = True, workers: int | None = None
) -> None:
    """Every image decoded in full (PIL's verify() does not decode JPEG data, so a truncated file passed it), in
    worker processes with a progress bar for large sets."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    todo = []
    for iid, im in images.items():
        name = im.get("file_name")
        if not isinstance(name, str):
            continue
        path = root / name
        if not path.is_file():
            err(f"image id {iid} ({path})", "image file missing")
        elif not decode:
            continue
        elif path.stat().st_size == 0:
            err(f"image id {iid} ({path})", "zero-byte image file")
        else:
            todo.append((iid, im, str(path)))
    workers = workers or min(os.cpu_count() or 1, 8)
    paths = [p for _, _, p in todo]
    bar = dict(total=len(todo), desc="decoding images", unit="img", disable=len(todo) < 200, mininterval=2)
    if workers > 1 and len(todo) >= 64:
        with ProcessPoolExecutor(workers) as pool:
            sizes = list(tqdm(pool.map(_decode, paths, chunksize=16), **bar))
    else:
        sizes = [_decode(p) for p in tqdm(paths, **bar)]
    for (iid, im, path), size in zip(todo, sizes):
        w = f"image id {iid} ({path})"
        if isinstance(size, str):
            err(w, f"unreadable image ({size})")
        elif (im.get("width"), im.get("height")) != size:
            err(w, f"JSON says {im.get('width')}x{im.get('height')}, the (oriented) image is {size[0]}x{size[1]}")


def check_file(ann_path: str | os.PathLike, images_dir: str | os.PathLike | None = None) -> list[Problem]:
    data, probs = load_json(ann_path)
    return probs if data is None else check_coco(data, str(ann_path), images_dir)


def raise_on_errors(problems: list[Problem], limit: int = 50) -> None:
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        shown = "\n".join(str(p) for p in errors[:limit])
        more = f"\n... and {len(errors) - limit} more" if len(errors) > limit else ""
        raise DataError(f"{len(errors)} problem(s) in the annotations:\n{shown}{more}")
