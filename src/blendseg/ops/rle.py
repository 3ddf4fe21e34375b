"""COCO mask API (faster-coco-eval's, pycocotools' as fallback) and polygon / RLE helpers."""

from __future__ import annotations

import numpy as np

try:
    from faster_coco_eval.core import mask as mask_api
except ImportError:  # pragma: no cover - exercised only without faster-coco-eval
    from pycocotools import mask as mask_api


def encode(mask: np.ndarray) -> dict:
    """Compressed RLE of a (H, W) bool/uint8 mask with ``counts`` as str (JSON-ready)."""
    rle = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    if isinstance(rle["counts"], bytes):
        rle["counts"] = rle["counts"].decode("ascii")
    return rle


def segm_to_rle(segm: list | dict, h: int, w: int) -> dict:
    """Polygons, uncompressed RLE or compressed RLE -> one compressed RLE of an (h, w) image."""
    if isinstance(segm, list):
        rles = mask_api.frPyObjects(segm, h, w)
        return mask_api.merge(rles)
    if isinstance(segm.get("counts"), list):
        return mask_api.frPyObjects(segm, h, w)
    rle = dict(segm)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle


def decode(segm: list | dict, h: int, w: int) -> np.ndarray:
    """(h, w) uint8 mask of a COCO segmentation of any format."""
    return np.ascontiguousarray(mask_api.decode(segm_to_rle(segm, h, w)))


def area(rle: dict) -> float:
    return float(mask_api.area(rle))


def to_bbox(rle: dict) -> list[float]:
    """COCO [x, y, w, h] of an RLE."""
    return [float(v) for v in mask_api.toBbox(rle)]


def rasterize_polygons_in_box(polygons: list[list[float]], box: list[float], size: int) -> np.ndarray:
    """(size, size) uint8: polygons shifted to the box (x0, y0, x1, y1) and scaled to size x size, then rasterised
    (detectron2's ``rasterize_polygons_within_box``, the reference's polygon crop-and-resize)."""
    x0, y0, x1, y1 = box
    rw, rh = size / max(x1 - x0, 0.1), size / max(y1 - y0, 0.1)
    scaled = []
    for p in polygons:
        q = np.asarray(p, dtype=np.float64).copy()
        q[0::2] = (q[0::2] - x0) * rw
        q[1::2] = (q[1::2] - y0) * rh
        scaled.append(q.tolist())
    return np.ascontiguousarray(mask_api.decode(mask_api.merge(mask_api.frPyObjects(scaled, size, size))))
