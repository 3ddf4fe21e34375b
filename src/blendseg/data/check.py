"""COCO instance annotations as annotation tools export them: what a person obviously meant is read, with one
warning line per kind of fix (a count and an example); only what cannot be used is an error, naming the file and
the annotation. ``strict`` turns every fix into an error. Never a traceback, whatever the JSON holds.

The fixes (:class:`Fixes`):

- boxes and polygons that reach past their image by more than a pixel are clipped to it (smaller overshoots are
  clipped silently: rounding);
- a bbox that disagrees with its mask (an edge off by more than 2 px or 2 % of the box) is taken from the mask, as
  is a missing one: the polygon is what a person drew, the box is derived from it;
- an ``area`` that disagrees with its mask (more than 15 % + 20 px off) is the mask's (COCO's rasterised area: it
  decides small / medium / large in evaluation), a box-only annotation's the box's;
- a polygon ring of fewer than 3 distinct points is left out when the annotation has other rings;
- a missing image file is skipped with its annotations (with ``images_dir``).

``segmentation`` missing or ``[]`` is a box-only annotation: read as its box, no mask (the key is removed).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from ..ops.rle import area as rle_area
from ..ops.rle import segm_to_rle, to_bbox
from .images import read_image

CLIP_SLACK = 1.0  # px past the image read as rounding, clipped without a word


@dataclass(frozen=True)
class Problem:
    severity: str  # "error" | "warning"
    where: str  # file, plus annotation / image id
    message: str

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.where}: {self.message}"


FIX_MESSAGES = {
    "clipped": "{n} annotation(s) reach past their image: boxes and polygons clipped to it",
    "box_from_mask": "{n} bbox(es) missing or unlike their masks: taken from the masks",
    "area_from_mask": "{n} area(s) missing or unlike their masks (or boxes, when box-only): recomputed",
    "ring_dropped": "{n} polygon ring(s) of fewer than 3 distinct points left out of annotations that have others",
    "missing_image": "{n} image file(s) missing: skipped with their annotations",
    "unused_categories": "{n} categor(ies) without any annotation dropped",
}


class Fixes:
    """What was fixed, by kind: a count and the first example each; :meth:`problems` gives one line per kind, a
    warning, or an error when ``strict``."""

    def __init__(self, where: str, strict: bool = False) -> None:
        self.where, self.strict = where, strict
        self.kinds: dict[str, list] = {}

    def add(self, kind: str, example: str) -> None:
        entry = self.kinds.setdefault(kind, [0, example])
        entry[0] += 1

    def problems(self) -> list[Problem]:
        severity = "error" if self.strict else "warning"
        suffix = " (data.strict=true refuses it)" if self.strict else ""
        return [
            Problem(severity, self.where, f"{FIX_MESSAGES[k].format(n=n)}, e.g. {ex}{suffix}")
            for k, (n, ex) in self.kinds.items()
        ]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _num_list(x: Any, n: int | None = None) -> bool:
    return isinstance(x, (list, tuple)) and all(map(_number, x)) and (n is None or len(x) == n)


def _int_id(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def load_json(path: str | os.PathLike) -> tuple[dict | None, list[Problem]]:
    """Parse the file; a problem instead of an exception when it is missing or not COCO-shaped JSON."""
    where = str(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None, [Problem("error", where, "file not found")]
    except IsADirectoryError:
        return None, [Problem("error", where, "a folder, not a COCO JSON file")]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, [Problem("error", where, f"not valid JSON ({e})")]
    if not isinstance(data, dict):
        return None, [Problem("error", where, "top level is not a JSON object")]
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        return None, [Problem("error", where, f"missing or non-list key(s): {', '.join(missing)}")]
    return data, []


def check_coco(
    data: dict, where: str, images_dir: str | os.PathLike | None = None, decode: bool = True, strict: bool = False
) -> tuple[dict, list[Problem]]:
    """The annotations as meant (the fixes above applied to a copy; ``data`` is not changed) and the problems:
    errors for what cannot be used, one warning per kind of fix (errors when ``strict``). With ``images_dir`` also
    that every image exists and, with ``decode``, that it decodes in full and has its size (``data check``;
    training only checks existence and skips unreadable files when it meets them)."""
    probs: list[Problem] = []
    err = lambda w, m: probs.append(Problem("error", f"{where}: {w}", m))  # noqa: E731
    fixes = Fixes(where, strict)
    cat_ids: set[int] = set()
    for c in data["categories"]:
        cid = c.get("id") if isinstance(c, dict) else None
        if not _int_id(cid):
            err("categories", f"category without an integer id: {c!r}"[:200])
        elif cid in cat_ids:
            err(f"category id {cid}", "duplicated category id")
        else:
            cat_ids.add(cid)
    images: dict[int, dict] = {}
    for im in data["images"]:
        iid = im.get("id") if isinstance(im, dict) else None
        if not _int_id(iid):
            err("images", f"image without an integer id: {im!r}"[:200])
            continue
        if iid in images:
            err(f"image id {iid}", "duplicated image id")
        bad = [k for k in ("height", "width") if not (_int_id(im.get(k)) and im[k] > 0)]
        if not isinstance(im.get("file_name"), str):
            bad.insert(0, "file_name")
        if bad:
            err(f"image id {iid}", f"missing or invalid {', '.join(bad)}: {im!r}"[:200])
        images[iid] = im
    missing = _check_files(images, Path(images_dir), where, err, fixes, decode) if images_dir is not None else set()
    annotations, ann_ids = [], set()
    for a in data["annotations"]:
        if not isinstance(a, dict):
            err("annotations", f"annotation is not an object: {a!r}"[:200])
            continue
        aid, iid = a.get("id"), a.get("image_id")
        w = f"annotation id {aid!r} (image id {iid!r})"[:120]
        if not _int_id(aid):
            err(w, "annotation without an integer id")
            continue
        if aid in ann_ids:
            err(w, "duplicated annotation id")
        ann_ids.add(aid)
        im = images.get(iid) if _int_id(iid) else None
        if im is None:
            err(w, "image_id refers to no image")
            continue
        if not (_int_id(a.get("category_id")) and a["category_id"] in cat_ids):
            err(w, f"unknown category_id {a.get('category_id')!r}"[:200])
            continue
        if not (_int_id(im.get("width")) and _int_id(im.get("height")) and im["width"] > 0 and im["height"] > 0):
            continue  # the image's size is reported above
        if iid in missing:
            continue
        fixed = _repair(a, im, w, err, fixes)
        if fixed is not None:
            annotations.append(fixed)
    box_only = sum("segmentation" not in a for a in annotations)
    if box_only:  # not a fix: a detection dataset; a dataset asked for masks refuses it (data.coco.CocoInstances)
        probs.append(
            Problem("warning", where, f"{box_only} of {len(annotations)} annotation(s) are box-only (no mask)")
        )
    out = {**data, "images": [im for iid, im in images.items() if iid not in missing], "annotations": annotations}
    return out, probs + fixes.problems()


def _repair(a: dict, im: dict, w: str, err, fixes: Fixes) -> dict | None:
    """The annotation as meant (a copy), or None after reporting why it cannot be used."""
    W, H = im["width"], im["height"]
    out = dict(a)
    seg, box = a.get("segmentation"), a.get("bbox")
    if box is not None and not _num_list(box, 4):
        err(w, f"bbox is not 4 finite numbers: {box!r}"[:200])
        return None
    if seg is None or (isinstance(seg, list) and not seg):  # box-only
        out.pop("segmentation", None)
        if box is None:
            err(w, "neither a bbox nor a segmentation")
            return None
        x0, y0, x1, y1 = box[0], box[1], box[0] + box[2], box[1] + box[3]
        c = [min(max(x0, 0), W), min(max(y0, 0), H), min(max(x1, 0), W), min(max(y1, 0), H)]
        if c[2] <= c[0] or c[3] <= c[1]:
            err(w, f"empty box {box} (in the {W}x{H} image, after clipping)")
            return None
        if max(-x0, -y0, x1 - W, y1 - H) > CLIP_SLACK:
            fixes.add("clipped", f"{w}: box {box} in the {W}x{H} image")
        out["bbox"] = [c[0], c[1], c[2] - c[0], c[3] - c[1]]
        mask_area = out["bbox"][2] * out["bbox"][3]
        _fix_area(out, mask_area, mask_area, w, fixes)
        return out
    if isinstance(seg, list):
        rings, overshoot, dropped = [], 0.0, 0
        for ring in seg:
            if not _num_list(ring) or len(ring) % 2:
                err(w, "polygon is not a flat list of x, y numbers")
                return None
            xs, ys = ring[0::2], ring[1::2]
            past = max(-min(xs), -min(ys), max(xs) - W, max(ys) - H) if xs else 0.0
            if past > 0:
                overshoot = max(overshoot, past)
                ring = [min(max(v, 0), W if i % 2 == 0 else H) for i, v in enumerate(ring)]
            if len(ring) < 6 or _shoelace(ring) == 0:  # no area: fewer than 3 distinct points, or all on a line
                dropped += 1
                continue
            rings.append(ring)
        if not rings:
            n = max((len(r) // 2 for r in seg if isinstance(r, list)), default=0)
            err(w, f"polygon with {n} point(s): no ring of 3 distinct points and some area (after clipping)")
            return None
        for _ in range(dropped):
            fixes.add("ring_dropped", w)
        if overshoot > CLIP_SLACK:
            fixes.add("clipped", f"{w}: a polygon {overshoot:.1f} px past the {W}x{H} image")
        out["segmentation"] = rings
        xs = [v for r in rings for v in r[0::2]]
        ys = [v for r in rings for v in r[1::2]]
        derived = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        quick_area = sum(_shoelace(r) for r in rings)
        exact_area = lambda: rle_area(segm_to_rle(rings, H, W))  # noqa: E731
    elif isinstance(seg, dict):
        size = seg.get("size")
        if not _num_list(size, 2) or not isinstance(seg.get("counts"), (str, bytes, list)):
            err(w, "RLE without size [h, w] and counts")
            return None
        if list(size) != [H, W]:
            err(w, f"RLE size {list(size)} differs from the image's {[H, W]}")
            return None
        try:
            rle = segm_to_rle(seg, H, W)
            derived, quick_area = to_bbox(rle), rle_area(rle)
        except Exception as e:  # a malformed counts string: the mask library's own words
            err(w, f"RLE that does not decode ({type(e).__name__}: {e})"[:200])
            return None
        if quick_area == 0:
            err(w, "empty RLE mask")
            return None
        exact_area = lambda: quick_area  # noqa: E731
    else:
        err(w, f"segmentation is neither polygons nor RLE: {type(seg).__name__}")
        return None
    if box is None:
        fixes.add("box_from_mask", f"{w}: no bbox")
        out["bbox"] = derived
    else:
        tol = max(2.0, 0.02 * max(derived[2], derived[3]))
        stored = [min(max(box[0], 0), W), min(max(box[1], 0), H), min(box[0] + box[2], W), min(box[1] + box[3], H)]
        edges = [derived[0], derived[1], derived[0] + derived[2], derived[1] + derived[3]]
        if max(abs(s - d) for s, d in zip(stored, edges)) > tol:
            fixes.add("box_from_mask", f"{w}: bbox {[round(v, 1) for v in box]} -> {[round(v, 1) for v in derived]}")
            out["bbox"] = derived
        else:
            out["bbox"] = [stored[0], stored[1], stored[2] - stored[0], stored[3] - stored[1]]
    _fix_area(out, quick_area, exact_area, w, fixes)
    return out


def _fix_area(out: dict, quick: float, exact, w: str, fixes: Fixes) -> None:
    """``out["area"]`` kept when within 15 % + 20 px of ``quick`` (a cheap estimate of the mask's area), else set to
    ``exact`` (a number, or a function computing it) and reported."""
    stored = out.get("area")
    if _number(stored) and abs(stored - quick) <= 0.15 * quick + 20:
        return
    value = float(exact() if callable(exact) else exact)
    fixes.add("area_from_mask", f"{w}: area {stored!r} -> {value:.0f}")
    out["area"] = value


def _shoelace(ring: list[float]) -> float:
    xs, ys = ring[0::2], ring[1::2]
    return abs(sum(x0 * y1 - x1 * y0 for x0, y0, x1, y1 in zip(xs, ys, xs[1:] + xs[:1], ys[1:] + ys[:1]))) / 2


def drop_unused_categories(data: dict, used: set[int], where: str, strict: bool = False) -> tuple[dict, list[Problem]]:
    """``data`` without the categories whose id is not in ``used`` (the ids annotated in any split of the dataset:
    every split keeps the same categories), and the fix that says which (Roboflow's COCO exports add one named
    after the dataset; CVAT's list every label of the project)."""
    unused = [c for c in data["categories"] if isinstance(c, dict) and c.get("id") not in used]
    if not unused:
        return data, []
    fixes = Fixes(where, strict)
    for _ in unused:
        fixes.add("unused_categories", ", ".join(f"{c.get('id')}: {c.get('name')!r}" for c in unused[:8]))
    return {**data, "categories": [c for c in data["categories"] if c not in unused]}, fixes.problems()


def _decode(path: str) -> tuple[int, int] | str:
    """(width, height) of a fully decoded image (as training reads it), or the reason it cannot be read."""
    try:
        image = read_image(path)
    except Exception as e:  # any decoder failure is the file's problem
        return str(e).removeprefix(f"{path}: ")
    return int(image.shape[-1]), int(image.shape[-2])


def _check_files(
    images: dict[int, dict], root: Path, where: str, err, fixes: Fixes, decode: bool = True, workers: int | None = None
) -> set[int]:
    """The ids of the images whose file is missing (a fix: they are skipped); with ``decode`` every other image is
    decoded in full (PIL's verify() does not decode JPEG data, so a truncated file passed it), in worker processes
    with a progress bar for large sets."""
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    todo, missing = [], set()
    for iid, im in images.items():
        name = im.get("file_name")
        if not isinstance(name, str):
            continue
        path = root / name
        if not path.is_file():
            fixes.add("missing_image", f"image id {iid} ({path})")
            missing.add(iid)
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
    return missing


def check_file(
    ann_path: str | os.PathLike, images_dir: str | os.PathLike | None = None, strict: bool = False
) -> list[Problem]:
    data, probs = load_json(ann_path)
    return probs if data is None else check_coco(data, str(ann_path), images_dir, strict=strict)[1]


def raise_on_errors(problems: list[Problem], limit: int = 50) -> None:
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        shown = "\n".join(str(p) for p in errors[:limit])
        more = f"\n... and {len(errors) - limit} more" if len(errors) > limit else ""
        raise DataError(f"{len(errors)} problem(s) in the annotations:\n{shown}{more}")
