"""COCO panoptic annotations read directly: PNG ids, validation, the semantic target and the thing instances.

A COCO panoptic split is a JSON (``images``, ``annotations`` with one ``file_name`` PNG and ``segments_info`` per
image, ``categories`` with ``isthing``) and a folder of PNGs whose RGB colour encodes the segment id
(id = R + 256 G + 256^2 B, 0 = void). From it :class:`CocoPanoptic` makes, on the fly, what the reference needs
detectron2's panoptic-separated preparation and hand-made .npz files for: the semantic target (0 = every thing
class, 1..S = the stuff classes in ascending category id, 255 = void) and, when no COCO instances JSON is given,
the thing instances (RLE masks from the PNGs, crowd flags from ``segments_info``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from ..ops.rle import encode
from .check import Problem, check_coco, raise_on_errors
from .coco import CocoInstances

IGNORE = 255


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 panoptic PNG colours -> (H, W) uint32 segment ids (panopticapi's ``rgb2id``)."""
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids -> (H, W, 3) uint8 colours (panopticapi's ``id2rgb``)."""
    ids = ids.astype(np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """(H, W) uint32 segment ids of a COCO panoptic PNG; a DataError naming the file when it cannot be read."""
    try:
        with Image.open(path) as pil:
            return rgb2id(np.asarray(pil.convert("RGB")))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read panoptic PNG ({e})") from None


def save_panoptic_png(ids: np.ndarray, path: str | os.PathLike) -> Path:
    """Write (H, W) segment ids as a COCO panoptic PNG (its folder made when missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(id2rgb(ids)).save(path)
    return path


def load_panoptic_json(path: str | os.PathLike) -> dict:
    """The parsed panoptic JSON; a DataError when it is missing, not JSON or lacks the COCO panoptic keys."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise DataError(f"{path}: not a COCO panoptic file: missing or non-list key(s) {', '.join(missing)}")
    return data


def check_panoptic(data: dict, where: str, masks_dir: str | os.PathLike | None = None) -> list[Problem]:
    """Problems of a parsed COCO panoptic dict: categories (integer ids, ``isthing`` 0/1), one annotation per known
    image, unique positive segment ids with known categories; with ``masks_dir`` also every PNG: present, readable,
    the image's size, its ids exactly those of ``segments_info`` (no segment empty, none unlisted) and areas as the
    JSON says (a warning; panopticapi takes ground-truth areas from the JSON)."""
    probs: list[Problem] = []
    err = lambda w, m, sev="error": probs.append(Problem(sev, f"{where}: {w}", m))  # noqa: E731
    cats: dict[int, dict] = {}
    for c in data["categories"]:
        cid = c.get("id") if isinstance(c, dict) else None
        if not isinstance(cid, int):
            err("categories", f"category without an integer id: {c!r}"[:200])
        elif c.get("isthing") not in (0, 1, True, False):
            err(f"category id {cid}", f"isthing must be 0 or 1, got {c.get('isthing')!r}")
        elif cid in cats:
            err(f"category id {cid}", "duplicated category id")
        else:
            cats[cid] = c
    images = {im["id"]: im for im in data["images"] if isinstance(im, dict) and isinstance(im.get("id"), int)}
    seen: set[int] = set()
    for ann in data["annotations"]:
        iid = ann.get("image_id") if isinstance(ann, dict) else None
        w = f"image id {iid}"
        if iid not in images:
            err(w, "panoptic annotation refers to no image")
            continue
        if iid in seen:
            err(w, "more than one panoptic annotation")
        seen.add(iid)
        segs = ann.get("segments_info")
        if not isinstance(segs, list) or not isinstance(ann.get("file_name"), str):
            err(w, "annotation needs file_name and a segments_info list")
            continue
        ids = [s.get("id") for s in segs]
        if any(not isinstance(i, int) or i <= 0 for i in ids):
            err(w, f"segment ids must be positive integers, got {ids}")
        elif len(set(ids)) != len(ids):
            err(w, f"duplicated segment ids {sorted(i for i in set(ids) if ids.count(i) > 1)}")
        for s in segs:
            if s.get("category_id") not in cats:
                err(f"{w} segment {s.get('id')}", f"unknown category_id {s.get('category_id')!r}")
        if masks_dir is not None:
            _check_png(Path(masks_dir) / ann["file_name"], images[iid], segs, w, err)
    for iid in sorted(set(images) - seen):
        err(f"image id {iid}", "no panoptic annotation (the image would count as all void)", "warning")
    return probs


def _check_png(path: Path, image: dict, segs: list[dict], w: str, err) -> None:
    w = f"{w} ({path})"
    if not path.is_file():
        err(w, "panoptic PNG missing")
        return
    try:
        ids = read_panoptic_png(path)
    except DataError as e:
        err(w, str(e).split(": ", 1)[-1])
        return
    if (ids.shape[1], ids.shape[0]) != (image.get("width"), image.get("height")):
        err(w, f"PNG is {ids.shape[1]}x{ids.shape[0]}, the image is {image.get('width')}x{image.get('height')}")
    found, counts = np.unique(ids, return_counts=True)
    area = dict(zip(found.tolist(), counts.tolist()))
    listed = {s.get("id"): s for s in segs}
    unlisted = sorted(i for i in area if i != 0 and i not in listed)
    empty = sorted(i for i in listed if i not in area)
    if unlisted:
        err(w, f"segment ids {unlisted[:10]} in the PNG are not in segments_info")
    if empty:
        err(w, f"segments {empty[:10]} of segments_info are empty in the PNG")
    for i, s in listed.items():
        if i in area and "area" in s and int(s["area"]) != area[i]:
            err(w, f"segment {i}: JSON area {s['area']} but {area[i]} pixels in the PNG", "warning")


def stuff_categories(data: dict) -> list[dict]:
    """The stuff categories in ascending id: semantic labels 1..S in this order (0 = things)."""
    return sorted((c for c in data["categories"] if not c.get("isthing")), key=lambda c: c["id"])


def semantic_target(ids: np.ndarray, segments: list[dict], sem_label_of_category: dict[int, int]) -> np.ndarray:
    """(H, W) uint8 semantic target of a panoptic id map: each segment's category mapped by
    ``sem_label_of_category`` (things -> 0, stuff -> 1..S; crowd segments count as their class), every other pixel
    (id 0, or an id without segment) ``IGNORE`` (255): what detectron2's prepare_panoptic_fpn.py writes."""
    lut_ids = np.array([0] + [s["id"] for s in segments], dtype=np.uint32)
    lut_vals = np.array([IGNORE] + [sem_label_of_category[s["category_id"]] for s in segments], dtype=np.uint8)
    order = np.argsort(lut_ids)
    pos = np.searchsorted(lut_ids[order], ids).clip(max=len(order) - 1)
    hit = lut_ids[order][pos] == ids
    return np.where(hit, lut_vals[order][pos], IGNORE).astype(np.uint8)


def panoptic_to_instances(data: dict, masks_dir: str | os.PathLike) -> dict:
    """A COCO instances dict of the thing segments (RLE from the PNGs, ``iscrowd`` and ``bbox`` from
    ``segments_info``, annotations in ``segments_info`` order), for splits that come without an instances JSON."""
    things = [c for c in data["categories"] if c.get("isthing")]
    thing_ids = {c["id"] for c in things}
    annotations = []
    for ann in data["annotations"]:
        segs = [s for s in ann["segments_info"] if s["category_id"] in thing_ids]
        if not segs:
            continue
        ids = read_panoptic_png(Path(masks_dir) / ann["file_name"])
        for s in segs:
            mask = ids == s["id"]
            ys, xs = np.nonzero(mask)
            if len(ys) == 0:
                continue
            bbox = s.get("bbox") or [int(xs.min()), int(ys.min()), int(xs.ptp()) + 1, int(ys.ptp()) + 1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": ann["image_id"],
                    "category_id": s["category_id"],
                    "segmentation": encode(mask),
                    "area": float(len(ys)),
                    "bbox": [float(v) for v in bbox],
                    "iscrowd": int(s.get("iscrowd", 0)),
                }
            )
    return {"images": data["images"], "annotations": annotations, "categories": things}


class CocoPanoptic(CocoInstances):
    """:class:`CocoInstances` of the thing classes plus, with ``with_panoptic_sem``, the target ``panoptic_sem``
    (H, W) uint8 (0 things, 1..S stuff, 255 void) made from the image's panoptic PNG.

    Args:
        panoptic_json / panoptic_dir: the COCO panoptic JSON and its PNG folder.
        ann_file: the COCO instances JSON of the things (the reference's panoptic-separated data use it); None
            derives the instances from the panoptic PNGs (:func:`panoptic_to_instances`).
        other arguments: as :class:`CocoInstances`.

    ``stuff_names`` / ``stuff_cat_ids`` list the stuff classes (semantic labels 1..S); ``panoptic`` holds the
    panoptic JSON (for PQ evaluation).
    """

    def __init__(
        self,
        panoptic_json: str | os.PathLike,
        panoptic_dir: str | os.PathLike,
        images_dir: str | os.PathLike,
        ann_file: str | os.PathLike | None = None,
        with_panoptic_sem: bool = False,
        check_files: bool = False,
        **kwargs,
    ) -> None:
        pan = load_panoptic_json(panoptic_json)
        raise_on_errors(check_panoptic(pan, str(panoptic_json)))
        data = None
        if ann_file is None:
            t0 = time.perf_counter()
            derived, where = panoptic_to_instances(pan, panoptic_dir), str(panoptic_json)
            data, probs = check_coco(derived, where, images_dir if check_files else None, decode=False)
            raise_on_errors(probs)
            ann_file = panoptic_json
            if time.perf_counter() - t0 > 30:
                print(
                    f"{panoptic_json}: instances derived from the PNGs in {time.perf_counter() - t0:.0f} s "
                    "(name an instances JSON as 'annotations' in data.yaml to skip this)"
                )
        kwargs["decode_min_side"] = 0  # the panoptic PNGs are read at the image's full size
        super().__init__(ann_file, images_dir, data=data, check_files=check_files, **kwargs)
        thing_ids = sorted(c["id"] for c in pan["categories"] if c.get("isthing"))
        if thing_ids != self.contiguous_to_cat_id:
            raise DataError(
                f"{panoptic_json}: its thing categories {thing_ids} differ from the instance categories "
                f"{self.contiguous_to_cat_id} of {ann_file}"
            )
        stuff = stuff_categories(pan)
        self.stuff_cat_ids = [c["id"] for c in stuff]
        self.stuff_names = [str(c.get("name", c["id"])) for c in stuff]
        self.sem_label_of_category = {cid: 0 for cid in thing_ids}
        self.sem_label_of_category.update({cid: i + 1 for i, cid in enumerate(self.stuff_cat_ids)})
        self.panoptic = pan
        self.panoptic_dir = Path(panoptic_dir)
        self.panoptic_of_image = {a["image_id"]: a for a in pan["annotations"]}
        self.with_panoptic_sem = with_panoptic_sem

    def get_target(
        self, info: dict, size: tuple[int, int] | None = None, window: tuple[int, int, int, int] | None = None
    ) -> dict[str, torch.Tensor]:
        target = super().get_target(info, size, window)
        if self.with_panoptic_sem:
            x0, y0, x1, y1 = window or (0, 0, info["width"], info["height"])
            target["panoptic_sem"] = torch.from_numpy(np.ascontiguousarray(self.panoptic_semantic(info)[y0:y1, x0:x1]))
        return target

    def panoptic_semantic(self, info: dict) -> np.ndarray:
        """(H, W) uint8 semantic target of an image (all void when it has no panoptic annotation)."""
        ann = self.panoptic_of_image.get(info["id"])
        if ann is None:
            return np.full((info["height"], info["width"]), IGNORE, np.uint8)
        ids = read_panoptic_png(self.panoptic_dir / ann["file_name"])
        if ids.shape != (info["height"], info["width"]):
            raise DataError(
                f"{self.panoptic_dir / ann['file_name']}: image id {info['id']}: PNG is {ids.shape[1]}x"
                f"{ids.shape[0]}, the image is {info['width']}x{info['height']}"
            )
        return semantic_target(ids, ann["segments_info"], self.sem_label_of_category)
