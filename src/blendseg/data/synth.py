"""Synthetic COCO-format instance-segmentation data: our built-in dataset for the demo, tests and benchmarks.

Six shape classes on textured / gradient backgrounds with unannotated distractors. Objects are painted in a
random z-order and annotated with their *visible* part only, so occlusion can split an instance into several
pieces; same-class instances touch and overlap (BlendMask's leakage case); some colours sit close to the
background; a few images hold crowd regions (``iscrowd=1``, RLE) and some hold no object at all.
Segmentations are polygons where the polygon is exact (fully visible, inside the image, no hole) and
compressed RLE otherwise. Every image is a function of (seed, split, index) only.

With ``panoptic=True`` the background is instead a partition into "stuff" regions (sky, vegetation, water,
ground: distinct colours and textures, wavy boundaries, sometimes a void seam between them) and each split also
gets COCO panoptic annotations: a PNG of segment ids per image and a panoptic JSON (things and stuff categories
with ``isthing``); the instances JSON of the things stays as it is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter

from ..ops.rle import encode, to_bbox

CLASSES = ("circle", "rectangle", "triangle", "ellipse", "star", "ring")
STUFF = ("sky", "vegetation", "water", "ground")
STUFF_ID0 = 101  # stuff category ids 101..104 (sparse, as COCO's 92..200 after the things)


@dataclass(frozen=True)
class Difficulty:
    min_objects: int
    max_objects: int
    avoid_overlap: bool
    touch_prob: float
    close_colour_prob: float
    distractors: int
    crowd_prob: float
    empty_prob: float


DIFFICULTY = {
    "easy": Difficulty(1, 4, True, 0.1, 0.05, 3, 0.03, 0.05),
    "normal": Difficulty(2, 8, False, 0.25, 0.15, 6, 0.06, 0.05),
    "hard": Difficulty(4, 14, False, 0.4, 0.3, 12, 0.1, 0.04),
}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (xx * math.cos(ang) + yy * math.sin(ang)) / max(h, w)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    gh, gw = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    grid = rng.normal(0, rng.uniform(8, 35), (gh, gw, 3)).astype(np.float32)
    tex = np.stack(
        [np.asarray(Image.fromarray(grid[..., c], mode="F").resize((w, h), Image.BICUBIC)) for c in range(3)],
        -1,
    )
    img = img + tex
    if rng.random() < 0.3:  # stripes
        period = rng.uniform(6, 30)
        img = img + 12 * np.sin(2 * math.pi * (xx * math.cos(ang + 1) + yy * math.sin(ang + 1)) / period)[..., None]
    return img


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, std: float) -> np.ndarray:
    """(h, w) low-frequency noise: a cells x cells Gaussian grid resized bicubically."""
    grid = rng.normal(0, std, (cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC))


def _stuff_texture(rng: np.random.Generator, kind: str, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float image of one stuff class, recognisable by colour range and texture."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "sky":  # smooth: blue-grey, brighter towards the bottom, soft clouds
        base = rng.uniform([90, 140, 190], [160, 200, 245])
        img = base[None, None] + (yy / h)[..., None] * rng.uniform(10, 40)
        return img + _smooth_noise(rng, h, w, 4, 10)[..., None]
    if kind == "vegetation":  # green, grainy, blotchy
        base = rng.uniform([30, 90, 20], [90, 160, 70])
        return base[None, None] + _smooth_noise(rng, h, w, 12, 14)[..., None] + rng.normal(0, 14, (h, w, 3))
    if kind == "water":  # blue-teal with horizontal ripples
        base = rng.uniform([15, 70, 120], [60, 130, 190])
        period, phase = rng.uniform(4, 9), rng.uniform(0, 2 * math.pi)
        ripple = 14 * np.sin(2 * math.pi * yy / period + 0.6 * np.sin(xx / rng.uniform(15, 40)) + phase)
        return base[None, None] + ripple[..., None] + rng.normal(0, 3, (h, w, 3))
    base = rng.uniform([120, 90, 50], [190, 150, 110])  # ground: brown-beige speckle
    return base[None, None] + _smooth_noise(rng, h, w, 6, 12)[..., None] + rng.normal(0, 9, (h, w, 1))


def _stuff_background(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Stuff bands from top to bottom (sky, when present, on top) with wavy boundaries: (h, w, 3) float image and
    (h, w) int32 stuff index per pixel (-1 on the void seams some boundaries get)."""
    n = int(rng.integers(2, 5))
    kinds = [STUFF[int(k)] for k in rng.permutation(len(STUFF))[:n]]
    kinds.sort(key=lambda k: k != "sky")
    xx = np.arange(w, dtype=np.float32)
    fracs = np.sort(rng.uniform(0.15, 0.85, n - 1))
    label = np.zeros((h, w), np.int32)
    seams = np.zeros((h, w), bool)
    yy = np.arange(h, dtype=np.float32)[:, None]
    for f in fracs:
        amp, period, phase = rng.uniform(0, 0.06 * h), rng.uniform(0.4, 1.5) * w, rng.uniform(0, 2 * math.pi)
        boundary = f * h + amp * np.sin(2 * math.pi * xx / period + phase)
        label += yy >= boundary[None, :]
        if rng.random() < 0.3:
            seams |= np.abs(yy - boundary[None, :]) < 1.0
    img = np.zeros((h, w, 3), np.float32)
    for i, kind in enumerate(kinds):
        region = label == i
        img[region] = _stuff_texture(rng, kind, h, w)[region]
    index = np.array([STUFF.index(k) for k in kinds], np.int32)[label]
    index[seams] = -1
    return img, index


def _shape_polygons(rng: np.random.Generator, cls: str, cx: float, cy: float, r: float) -> tuple[list, list]:
    """(outer polygons, hole polygons), each a list of (x, y) vertex lists."""
    th = rng.uniform(0, 2 * math.pi)

    def ellipse(a: float, b: float, n: int = 48) -> list:
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        x, y = a * np.cos(t), b * np.sin(t)
        return [
            (cx + x[i] * math.cos(th) - y[i] * math.sin(th), cy + x[i] * math.sin(th) + y[i] * math.cos(th))
            for i in range(n)
        ]

    if cls == "circle":
        return [ellipse(r, r)], []
    if cls == "ellipse":
        return [ellipse(r, r * rng.uniform(0.35, 0.7))], []
    if cls == "ring":
        hole = r * rng.uniform(0.45, 0.65)
        return [ellipse(r, r)], [ellipse(hole, hole)]
    if cls == "rectangle":
        a, b = r, r * (rng.uniform(0.12, 0.3) if rng.random() < 0.25 else rng.uniform(0.45, 1.0))
        pts = [(-a, -b), (a, -b), (a, b), (-a, b)]
    elif cls == "triangle":
        pts = [
            (r * math.cos(k * 2 * math.pi / 3 + rng.uniform(-0.25, 0.25)), r * math.sin(k * 2 * math.pi / 3))
            for k in range(3)
        ]
    else:  # star
        inner = rng.uniform(0.38, 0.5)
        pts = [
            (
                (r if k % 2 == 0 else r * inner) * math.cos(k * math.pi / 5),
                (r if k % 2 == 0 else r * inner) * math.sin(k * math.pi / 5),
            )
            for k in range(10)
        ]
    c, s = math.cos(th), math.sin(th)
    return [[(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]], []


def _raster(polys: list, holes: list, h: int, w: int) -> np.ndarray:
    # COCO polygons cover pixel (x, y) as the square [x, x+1]; PIL fills by pixel centre: shift by -0.5.
    im = Image.new("L", (w, h), 0)
    d = ImageDraw.Draw(im)
    for p in polys:
        d.polygon([(x - 0.5, y - 0.5) for x, y in p], fill=1)
    for p in holes:
        d.polygon([(x - 0.5, y - 0.5) for x, y in p], fill=0)
    return np.asarray(im, dtype=bool)


def _colour(rng: np.random.Generator, img: np.ndarray, cx: float, cy: float, close_prob: float) -> np.ndarray:
    if rng.random() < close_prob:
        y, x = int(np.clip(cy, 0, img.shape[0] - 1)), int(np.clip(cx, 0, img.shape[1] - 1))
        return np.clip(img[y, x] + rng.choice([-1, 1], 3) * rng.uniform(18, 40, 3), 0, 255)
    return rng.uniform(0, 255, 3)


def _paint(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    g = rng.normal(0, 18, 3)
    t = (xs - xs.min()) / max(int(xs.max() - xs.min()), 1)
    img[ys, xs] = colour[None] + t[:, None] * g[None] + rng.normal(0, 3, (len(ys), 3))


def _distractors(rng: np.random.Generator, img: np.ndarray, n: int) -> np.ndarray:
    h, w = img.shape[:2]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(pil)
    for _ in range(n):
        col = tuple(int(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(3)
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        if kind == 0:
            d.line(
                [(x0, y0), (x0 + rng.normal(0, w / 3), y0 + rng.normal(0, h / 3))],
                fill=col,
                width=int(rng.integers(1, 4)),
            )
        elif kind == 1:
            rr = rng.uniform(1, 3)
            d.ellipse([x0 - rr, y0 - rr, x0 + rr, y0 + rr], fill=col)
        else:  # arc (looks like part of a ring, but is background)
            rr = rng.uniform(8, 40)
            d.arc(
                [x0 - rr, y0 - rr, x0 + rr, y0 + rr],
                rng.uniform(0, 180),
                rng.uniform(200, 330),
                fill=col,
                width=2,
            )
    if rng.random() < 0.3:
        pil = pil.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    return np.asarray(pil, dtype=np.float32)


def _place(
    rng: np.random.Generator, h: int, w: int, diff: Difficulty, placed: list, scale: int | None = None
) -> tuple[float, float, float, str]:
    smin = min(h, w, scale or h)
    for _ in range(20):
        r = math.exp(rng.uniform(math.log(5), math.log(0.42 * smin)))
        if placed and rng.random() < diff.touch_prob:  # same class, touching / overlapping the previous one
            pcx, pcy, pr, pcls = placed[-1]
            ang = rng.uniform(0, 2 * math.pi)
            r = pr * rng.uniform(0.6, 1.2)
            dist = (pr + r) * rng.uniform(0.7, 1.0)
            return pcx + dist * math.cos(ang), pcy + dist * math.sin(ang), r, pcls
        cx, cy = rng.uniform(r * 0.6, w - r * 0.6), rng.uniform(r * 0.6, h - r * 0.6)
        if not diff.avoid_overlap or all(math.hypot(cx - px, cy - py) > r + pr for px, py, pr, _ in placed):
            break
    return cx, cy, r, CLASSES[int(rng.integers(len(CLASSES)))]


def render_image(
    seed: int,
    split: str,
    index: int,
    min_size: int,
    max_size: int,
    difficulty: str,
    panoptic: bool = False,
    object_scale: int | None = None,
) -> tuple[np.ndarray, list[dict]] | tuple[np.ndarray, list[dict], np.ndarray, list[dict]]:
    """One (H, W, 3) uint8 RGB image and its annotations (without ids): deterministic in its arguments. With
    ``panoptic`` also the (H, W) uint32 panoptic segment ids and their ``segments_info`` (COCO panoptic). With
    ``object_scale`` S, a large image of small objects: shapes sized as in an S-pixel image, and as many as an
    S x S image holds for every S x S of this one."""
    diff = DIFFICULTY[difficulty]
    rng = np.random.default_rng([seed, {"train": 0, "val": 1}.get(split, 2), index])
    h, w = int(rng.integers(min_size, max_size + 1)), int(rng.integers(min_size, max_size + 1))
    if panoptic:  # its own stream, so that the instance-only dataset of a seed stays what it was
        background, stuff = _stuff_background(
            np.random.default_rng([seed, {"train": 0, "val": 1}.get(split, 2), index, 7]), h, w
        )
    else:
        background = _background(rng, h, w)
    img = _distractors(rng, background, diff.distractors)
    n = 0 if rng.random() < diff.empty_prob else int(rng.integers(diff.min_objects, diff.max_objects + 1))
    if object_scale:
        n = int(round(n * h * w / object_scale**2))
    objects, placed = [], []  # objects: (category index or -1 for crowd, full mask, polygons or None)
    if n and rng.random() < diff.crowd_prob:
        ccx, ccy, spread = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, rng.uniform(15, 40)
        crowd = np.zeros((h, w), bool)
        for _ in range(int(rng.integers(6, 13))):
            polys, _ = _shape_polygons(
                rng, "circle", ccx + rng.normal(0, spread), ccy + rng.normal(0, spread), rng.uniform(3, 7)
            )
            crowd |= _raster(polys, [], h, w)
        objects.append((-1, crowd, None))
    for _ in range(n):
        cx, cy, r, cls = _place(rng, h, w, diff, placed, object_scale)
        placed.append((cx, cy, r, cls))
        polys, holes = _shape_polygons(rng, cls, cx, cy, r)
        objects.append((CLASSES.index(cls), _raster(polys, holes, h, w), None if holes else polys))
    order = rng.permutation(len(objects))
    idmap = np.full((h, w), -1, np.int32)
    for k in order:
        cat, mask, _ = objects[k]
        _paint(
            rng,
            img,
            mask,
            _colour(rng, img, *np.argwhere(mask).mean(0)[::-1] if mask.any() else (0, 0), diff.close_colour_prob),
        )
        idmap[mask] = k
    anns, kept = [], []
    for k, (cat, mask, polys) in enumerate(objects):
        visible = idmap == k
        if visible.sum() < 6:
            continue
        kept.append(k)
        rle = encode(visible)
        exact = (
            polys is not None
            and visible.sum() == mask.sum()
            and all(0 <= x <= w and 0 <= y <= h for p in polys for x, y in p)
        )
        segm = [[round(float(c), 2) for xy in p for c in xy] for p in polys] if exact else rle
        anns.append(
            {
                "category_id": 1 + (cat if cat >= 0 else 0),
                "segmentation": segm,
                "area": float(visible.sum()),
                "bbox": [round(v, 2) for v in to_bbox(rle)],
                "iscrowd": int(cat < 0),
            }
        )
    img = img + rng.normal(0, 2.5, img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if not panoptic:
        return img, anns
    ids, segments = _panoptic_segments(np.random.default_rng([seed, 9, index]), idmap, kept, anns, stuff)
    return img, anns, ids, segments


def _panoptic_segments(
    rng: np.random.Generator, idmap: np.ndarray, kept: list[int], anns: list[dict], stuff: np.ndarray
) -> tuple[np.ndarray, list[dict]]:
    """Panoptic ids (H, W) uint32 and segments_info: one segment per annotated (visible) object, one per stuff
    class on the pixels no object covers; objects too small to annotate and the seams are void (0). Segment ids are
    random distinct 24-bit values, so that the PNGs have colours, as COCO's."""
    h, w = idmap.shape
    masks = [(idmap == k, a["category_id"], a["iscrowd"]) for k, a in zip(kept, anns)]
    free = idmap < 0
    masks += [(free & (stuff == i), STUFF_ID0 + i, 0) for i in range(len(STUFF))]
    masks = [m for m in masks if m[0].any()]
    seg_ids = rng.choice(256**3 - 1, size=len(masks), replace=False) + 1
    ids = np.zeros((h, w), np.uint32)
    segments = []
    for sid, (mask, cat, crowd) in zip(seg_ids.tolist(), masks):
        ids[mask] = sid
        ys, xs = np.nonzero(mask)
        bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1]
        segments.append({"id": sid, "category_id": cat, "iscrowd": crowd, "bbox": bbox, "area": int(len(ys))})
    return ids, segments


def write_split(
    out: Path,
    split: str,
    num: int,
    seed: int,
    min_size: int,
    max_size: int,
    difficulty: str,
    panoptic: bool = False,
    object_scale: int | None = None,
) -> Path:
    img_dir = out / split / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations, pan_annotations = [], [], []
    for i in range(num):
        rendered = render_image(seed, split, i, min_size, max_size, difficulty, panoptic, object_scale)
        img, anns = rendered[:2]
        name = f"{split}_{i:06d}.jpg"
        Image.fromarray(img).save(img_dir / name, quality=93)
        images.append({"id": i + 1, "file_name": name, "height": img.shape[0], "width": img.shape[1]})
        for a in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **a})
        if panoptic:
            from .panoptic import save_panoptic_png

            png = f"{split}_{i:06d}.png"
            save_panoptic_png(rendered[2], out / split / "panoptic" / png)
            pan_annotations.append({"image_id": i + 1, "file_name": png, "segments_info": rendered[3]})
    things = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]
    coco = {
        "info": {"description": f"blendseg synthetic shapes ({difficulty}, seed {seed})"},
        "images": images,
        "annotations": annotations,
        "categories": things,
    }
    path = out / split / "annotations.json"
    path.write_text(json.dumps(coco))
    if panoptic:
        stuff = [{"id": STUFF_ID0 + i, "name": n, "supercategory": "stuff", "isthing": 0} for i, n in enumerate(STUFF)]
        pan = {
            "info": {"description": f"blendseg synthetic panoptic shapes ({difficulty}, seed {seed})"},
            "images": images,
            "annotations": pan_annotations,
            "categories": [{**c, "isthing": 1} for c in things] + stuff,
        }
        (out / split / "panoptic.json").write_text(json.dumps(pan))
    return path


def synthesize(
    out: str | Path,
    train: int,
    val: int,
    seed: int = 0,
    min_size: int = 256,
    max_size: int = 320,
    difficulty: str = "normal",
    panoptic: bool = False,
    object_scale: int | None = None,
) -> Path:
    """Write ``OUT/data.yaml`` and the train / val splits (with ``panoptic`` also their COCO panoptic PNGs and
    JSON, named in data.yaml); returns the data.yaml path. ``object_scale``: see :func:`render_image`."""
    if difficulty not in DIFFICULTY:
        raise ValueError(f"difficulty must be one of {sorted(DIFFICULTY)}, got {difficulty!r}")
    if min_size > max_size:
        raise ValueError(f"min_size {min_size} > max_size {max_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, n in (("train", train), ("val", val)):
        if n > 0:
            write_split(out, split, n, seed, min_size, max_size, difficulty, panoptic, object_scale)
            splits[split] = {"images": f"{split}/images", "annotations": f"{split}/annotations.json"}
            if panoptic:
                splits[split].update(panoptic=f"{split}/panoptic.json", panoptic_masks=f"{split}/panoptic")
    data = {"path": str(out.resolve()), **splits, "names": dict(enumerate(CLASSES))}
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out / "data.yaml"
