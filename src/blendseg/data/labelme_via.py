"""The two other annotation formats people use most, read as a COCO instances dict (``blendseg data convert
--from labelme|via``: :mod:`blendseg.data.convert`).

- **LabelMe**: one JSON per image (``shapes``: ``label``, ``points``, ``shape_type``, ``group_id``; ``imagePath``,
  ``imageHeight``, ``imageWidth``). Polygons, rectangles and circles are areas (a circle as a 32-gon); shapes of one
  label that share a ``group_id`` are one instance of several parts. Lines, line strips and points mark no area:
  left out with a warning.
- **VIA** (VGG Image Annotator 1.x / 2.x): one JSON for all images, ``{key: {filename, regions: [...]}}`` or a
  project file holding it under ``_via_img_metadata``. Regions are ``polygon`` (``all_points_x`` / ``_y``),
  ``rect``, ``circle`` and ``ellipse``; the class is the region attribute ``attribute`` names (default: the only
  one, or ``label`` / ``class`` / ``name`` / ``type``), ``default_class`` when regions have none (the balloon
  dataset of detectron2's tutorial). Image sizes are read from the files.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .check import Problem
from .images import image_size

AREA_SHAPES = ("polygon", "rectangle", "circle")
CLASS_KEYS = ("label", "class", "name", "type", "category")


def _ellipse(cx: float, cy: float, rx: float, ry: float, theta: float = 0.0, n: int = 32) -> list[float]:
    c, s = math.cos(theta), math.sin(theta)
    pts = []
    for k in range(n):
        a = 2 * math.pi * k / n
        x, y = rx * math.cos(a), ry * math.sin(a)
        pts += [cx + c * x - s * y, cy + s * x + c * y]
    return pts


def _polygon_box(rings: list[list[float]]) -> list[float]:
    xs = [v for r in rings for v in r[0::2]]
    ys = [v for r in rings for v in r[1::2]]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


class _Builder:
    """Accumulates images, instances and categories (ids 1.. in order of first appearance)."""

    def __init__(self) -> None:
        self.coco: dict = {"images": [], "annotations": [], "categories": []}
        self.cat_ids: dict[str, int] = {}

    def image(self, file_name: str, width: int, height: int) -> int:
        iid = len(self.coco["images"]) + 1
        self.coco["images"].append({"id": iid, "file_name": file_name, "width": width, "height": height})
        return iid

    def instance(self, image_id: int, label: str, rings: list[list[float]]) -> None:
        """An instance of ``rings`` (x y x y ... each) in image ``image_id``, its area COCO's (rasterised)."""
        from ..ops.rle import area, segm_to_rle

        if label not in self.cat_ids:
            self.cat_ids[label] = len(self.cat_ids) + 1
            self.coco["categories"].append({"id": self.cat_ids[label], "name": label})
        im = self.coco["images"][image_id - 1]
        usable = [r for r in rings if len(r) >= 6]
        self.coco["annotations"].append(
            {
                "id": len(self.coco["annotations"]) + 1,
                "image_id": image_id,
                "category_id": self.cat_ids[label],
                "segmentation": rings,
                "bbox": _polygon_box(rings),
                "iscrowd": 0,
                "area": area(segm_to_rle(usable, im["height"], im["width"])) if usable else 0.0,
            }
        )


def read_labelme(folder: str | os.PathLike) -> tuple[dict, Path, list[Problem]]:
    """A COCO dict of every LabelMe JSON below ``folder`` (``file_name`` relative to it), the folder, and the
    problems (files that are not LabelMe JSON, shapes without an area)."""
    folder = Path(folder)
    out, probs, skipped = _Builder(), [], {}
    files = sorted(folder.rglob("*.json"))
    for path in files:
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            probs.append(Problem("warning", str(path), f"not read: {type(e).__name__}: {e}"[:200]))
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("shapes"), list) or "imagePath" not in doc:
            probs.append(Problem("warning", str(path), "not a LabelMe file (no shapes / imagePath): left out"))
            continue
        image = (path.parent / str(doc["imagePath"]).replace("\\", "/")).resolve()
        try:
            w, h = int(doc.get("imageWidth") or 0), int(doc.get("imageHeight") or 0)
            if not (w and h):
                w, h = image_size(image)
        except (OSError, ValueError, TypeError) as e:
            probs.append(Problem("error", str(path), f"no image size and the image cannot be read ({e})"))
            continue
        name = os.path.relpath(image, folder.resolve())
        iid = out.image(name.replace(os.sep, "/"), w, h)
        groups: dict[tuple, list[list[float]]] = {}
        for k, shape in enumerate(doc["shapes"]):
            kind = shape.get("shape_type") or "polygon"
            pts = shape.get("points") or []
            if kind not in AREA_SHAPES:
                skipped[kind] = skipped.get(kind, 0) + 1
                continue
            try:
                flat = [float(v) for p in pts for v in p[:2]]
            except (TypeError, ValueError):
                probs.append(Problem("error", f"{path}: shape {k}", f"points are not [x, y] pairs: {pts!r}"[:200]))
                continue
            if kind == "rectangle" and len(flat) == 4:
                (x0, x1), (y0, y1) = sorted(flat[0::2]), sorted(flat[1::2])
                flat = [x0, y0, x1, y0, x1, y1, x0, y1]
            elif kind == "circle" and len(flat) == 4:
                r = math.hypot(flat[2] - flat[0], flat[3] - flat[1])
                flat = _ellipse(flat[0], flat[1], r, r)
            key = (str(shape.get("label", "")), shape.get("group_id") if shape.get("group_id") is not None else -1 - k)
            groups.setdefault(key, []).append(flat)
        for (label, _), rings in groups.items():
            out.instance(iid, label, rings)
    if not files:
        probs.append(Problem("error", str(folder), "no LabelMe JSON files below it"))
    for kind, n in skipped.items():
        probs.append(Problem("warning", str(folder), f"{n} '{kind}' shape(s) mark no area: left out"))
    return out.coco, folder, probs


def read_via(
    path: str | os.PathLike,
    images_dir: str | os.PathLike | None = None,
    attribute: str | None = None,
    default_class: str = "object",
) -> tuple[dict, Path, list[Problem]]:
    """A COCO dict of a VIA JSON export or project file (images looked up in ``images_dir``, default: the JSON's
    folder), the images folder, and the problems."""
    path = Path(path)
    root = Path(images_dir) if images_dir else path.parent
    probs: list[Problem] = []
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return {"images": [], "annotations": [], "categories": []}, root, [Problem("error", str(path), f"{e}")]
    doc = doc.get("_via_img_metadata", doc) if isinstance(doc, dict) else doc
    if not isinstance(doc, dict) or not all(isinstance(v, dict) and "filename" in v for v in doc.values()):
        return (
            {"images": [], "annotations": [], "categories": []},
            root,
            [Problem("error", str(path), "not a VIA export ({key: {filename, regions}})")],
        )
    out, skipped = _Builder(), {}
    for entry in doc.values():
        name = str(entry["filename"])
        try:
            w, h = image_size(root / name)
        except (OSError, ValueError) as e:
            probs.append(Problem("warning", f"{path}: {name}", f"image not read, left out ({type(e).__name__})"))
            continue
        iid = out.image(name, w, h)
        regions = entry.get("regions") or []
        for k, region in enumerate(regions.values() if isinstance(regions, dict) else regions):
            shape = region.get("shape_attributes", {}) if isinstance(region, dict) else {}
            attrs = region.get("region_attributes", {}) if isinstance(region, dict) else {}
            label = _via_label(attrs, attribute, default_class)
            try:
                rings = _via_shape(shape)
            except (KeyError, TypeError, ValueError) as e:
                probs.append(Problem("error", f"{path}: {name} region {k}", f"unreadable {shape!r}"[:160] + f" ({e})"))
                continue
            if rings is None:
                kind = str(shape.get("name"))
                skipped[kind] = skipped.get(kind, 0) + 1
                continue
            out.instance(iid, label, rings)
    for kind, n in skipped.items():
        probs.append(Problem("warning", str(path), f"{n} '{kind}' region(s) mark no area: left out"))
    return out.coco, root, probs


def _via_label(attrs: dict, attribute: str | None, default: str) -> str:
    if not isinstance(attrs, dict) or not attrs:
        return default
    if attribute is not None:
        value = attrs.get(attribute, default)
    elif len(attrs) == 1:
        value = next(iter(attrs.values()))
    else:
        value = next((attrs[k] for k in CLASS_KEYS if k in attrs), default)
    if isinstance(value, dict):  # a checkbox attribute: {option: true}
        value = next((k for k, v in value.items() if v), default)
    return str(value) if value not in (None, "") else default


def _via_shape(s: dict) -> list[list[float]] | None:
    kind = s.get("name")
    if kind == "polygon":
        xs, ys = s["all_points_x"], s["all_points_y"]
        return [[float(v) for p in zip(xs, ys) for v in p]]
    if kind == "rect":
        x, y, w, h = (float(s[k]) for k in ("x", "y", "width", "height"))
        return [[x, y, x + w, y, x + w, y + h, x, y + h]]
    if kind == "circle":
        return [_ellipse(float(s["cx"]), float(s["cy"]), float(s["r"]), float(s["r"]))]
    if kind == "ellipse":
        return [_ellipse(float(s["cx"]), float(s["cy"]), float(s["rx"]), float(s["ry"]), float(s.get("theta", 0)))]
    return None
