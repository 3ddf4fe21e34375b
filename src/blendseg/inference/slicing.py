"""Sliced prediction for large images with small objects: the image cut into overlapping square tiles, each tile
predicted as an image of its own (the model's test-time resize enlarges what is small), and the tiles' instances
merged back by their *masks* in image coordinates.

The merging rule. Two instances of the same class from two tiles are one object when, inside the region the two
tiles share, their masks overlap by IoU >= ``match`` (both tiles saw that region whole, so the same object shows
the same pixels there), or the smaller one's pixels there lie inside the larger's (>= ``cover``: a sliver at a
tile's edge). The relation is closed transitively (an object over a tile corner joins four pieces). A merged object
takes the union of its pieces' masks (a mask cut at a border is completed from the neighbouring tile), the highest
score, and the union of their boxes. The optional full-image pass (SAHI's "standard prediction") adds what no tile
found: a full-image instance is dropped where it and a tile's instance of its class overlap by half of the smaller
mask, since the tile saw that object at a larger scale (merging the two would blur the tile's mask)::

    +---------+-----+---------+        tile A = columns 0 .. 9, tile B = columns 6 .. 15, shared band 6 .. 9
    | A    ###|#####|###    B |        the object's pieces in A and in B agree inside the band (IoU >= match):
    |      ###|#####|###      |        one object, mask = A's piece | B's piece
    +---------+-----+---------+

Memory follows the tile batch and the instances (each mask kept as its own window), never the image's size.

Shape legend: D instances, T tiles, H x W the image.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..structures import Instances, WindowMasks
from .result import Result

Rect = tuple[int, int, int, int]  # (y0, x0, y1, x1), end exclusive
Window = tuple[int, int, Tensor]  # (y0, x0, (h, w) bool)


@dataclass(frozen=True)
class SliceSpec:
    """``size``: the tiles' side in image pixels (the model's test size is a good start); ``overlap``: the
    fraction two neighbouring tiles share; ``full``: also predict the whole image and merge it in; ``batch``: tiles
    per network call; ``match`` / ``cover``: the merging rule's thresholds (module docstring)."""

    size: int
    overlap: float = 0.2
    full: bool = False
    batch: int = 4
    match: float = 0.5
    cover: float = 0.8

    def __post_init__(self) -> None:
        if self.size < 32:
            raise ValueError(f"slice size {self.size}: tiles need at least 32 pixels a side")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"slice overlap {self.overlap}: a fraction in [0, 1)")
        if self.batch < 1:
            raise ValueError(f"slice batch {self.batch}: at least 1")


def tile_rects(h: int, w: int, size: int, overlap: float) -> list[Rect]:
    """Tiles of ``size`` covering an (h, w) image, neighbours sharing ``overlap`` of a side; the last row and column
    end at the image's edge; a side shorter than ``size`` is one tile of that side."""

    def starts(n: int) -> list[int]:
        if n <= size:
            return [0]
        stride = max(1, int(size * (1 - overlap)))
        out = list(range(0, n - size, stride))
        return out + [n - size]

    return [(y, x, min(y + size, h), min(x + size, w)) for y in starts(h) for x in starts(w)]


def sliced_instances(
    detect: Callable[[list[Tensor]], list], image: Tensor, spec: SliceSpec, conf: float, max_det: int
) -> Instances:
    """The merged instances of ``image`` (3, H, W): ``detect(tiles) -> detections`` per tile (each with boxes,
    scores, labels and compact masks in the tile's pixels, on any device), called on at most ``spec.batch`` tiles
    at a time; instances under ``conf`` are dropped in each tile, at most ``max_det`` kept per tile and in all."""
    rects, pieces, masks_made = tile_pieces(detect, image, spec, conf, max_det)
    return merge_pieces(rects, pieces, masks_made, spec, max_det, tuple(image.shape[-2:]))


def merge_pieces(
    rects: list[Rect], pieces: list, masks_made: bool, spec: SliceSpec, max_det: int, hw: tuple[int, int]
) -> Instances:
    """:func:`tile_pieces`' instances merged by the rule of the module docstring, the best ``max_det`` kept."""
    h, w = hw
    whole = len(rects) - 1 if spec.full else -1  # the full-image pass's index among the tiles
    tiled = [i for i, p in enumerate(pieces) if p[0] != whole]
    groups = [[tiled[i] for i in g] for g in _group([pieces[i] for i in tiled], rects, spec.match, spec.cover)]
    groups += [[i] for i, p in enumerate(pieces) if p[0] == whole and not _found(p, [pieces[j] for j in tiled])]
    merged = sorted((_merge([pieces[i] for i in g]) for g in groups), key=lambda m: -m[1])[:max_det]
    boxes = torch.stack([m[0] for m in merged]) if merged else torch.zeros(0, 4)
    scores = torch.tensor([m[1] for m in merged], dtype=torch.float32)
    labels = torch.tensor([m[2] for m in merged], dtype=torch.int64)
    masks = WindowMasks([m[3] for m in merged], (h, w)) if masks_made else None
    return Instances(boxes, scores, labels, masks)


def tile_pieces(
    detect: Callable[[list[Tensor]], list], image: Tensor, spec: SliceSpec, conf: float, max_det: int
) -> tuple[list[Rect], list[tuple[int, Tensor, float, int, Window]], bool]:
    """The tiles (the whole image last with ``spec.full``) and every tile's instances before merging, as
    ``(tile, box, score, label, window)`` in image pixels (a box model's window is its filled box), and whether
    the model gave masks."""
    h, w = image.shape[-2:]
    rects = tile_rects(h, w, spec.size, spec.overlap)
    if spec.full:
        rects.append((0, 0, h, w))
    pieces: list[tuple[int, Tensor, float, int, Window]] = []
    masks_made = False
    for first in range(0, len(rects), spec.batch):
        chunk = rects[first : first + spec.batch]
        tiles = [image[:, y0:y1, x0:x1] for y0, x0, y1, x1 in chunk]
        for k, dets in enumerate(detect(tiles)):
            y0, x0 = chunk[k][:2]
            masks_made = dets.masks is not None
            keep = (dets.scores >= conf).nonzero()[:, 0]
            keep = keep[dets.scores[keep].argsort(descending=True)[:max_det]].cpu()
            shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
            for i in keep.tolist():
                box = dets.boxes[i].detach().float().cpu() + shift
                if dets.masks is not None:
                    wy, wx, win = dets.masks.window(i)
                    win = (wy + y0, wx + x0, win.cpu())
                else:  # a box model: its box as a filled window, for the merging rule
                    win = _box_window(box)
                pieces.append((first + k, box, float(dets.scores[i]), int(dets.labels[i]), win))
    return rects, pieces, masks_made


def _group(pieces: list, rects: list[Rect], match: float, cover: float) -> list[list[int]]:
    """Union-find over pairs of pieces from two overlapping tiles that the merging rule joins; only pairs of one
    class whose boxes meet inside the shared region are looked at."""
    parent = list(range(len(pieces)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if not pieces:
        return []
    boxes = torch.stack([p[1] for p in pieces])  # (D, 4) xyxy
    labels = torch.tensor([p[3] for p in pieces])
    tile_of = torch.tensor([p[0] for p in pieces])
    tiles = sorted(set(tile_of.tolist()))
    members = {t: (tile_of == t).nonzero()[:, 0] for t in tiles}
    for ai, a in enumerate(tiles):
        for b in tiles[ai + 1 :]:
            shared = _intersect(rects[a], rects[b])
            if shared is None:
                continue
            y0, x0, y1, x1 = shared
            ia, ib = (_meeting(boxes, members[t], (x0, y0, x1, y1)) for t in (a, b))
            if not len(ia) or not len(ib):
                continue
            lt = torch.maximum(boxes[ia, None, :2], boxes[None, ib, :2])
            rb = torch.minimum(boxes[ia, None, 2:], boxes[None, ib, 2:])
            meet = ((rb - lt) > 0).all(-1) & (labels[ia, None] == labels[None, ib])
            for i, j in meet.nonzero().tolist():
                i, j = int(ia[i]), int(ib[j])
                if root(i) != root(j) and _same(pieces[i][4], pieces[j][4], shared, match, cover):
                    parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _meeting(boxes: Tensor, idx: Tensor, rect: tuple[int, int, int, int]) -> Tensor:
    """The pieces among ``idx`` whose boxes reach into ``rect`` (x0, y0, x1, y1)."""
    b = boxes[idx]
    inside = (b[:, 0] < rect[2]) & (b[:, 2] > rect[0]) & (b[:, 1] < rect[3]) & (b[:, 3] > rect[1])
    return idx[inside]


def _intersect(a: Rect, b: Rect) -> Rect | None:
    r = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return r if r[2] > r[0] and r[3] > r[1] else None


def _extent(win: Window) -> Rect:
    return win[0], win[1], win[0] + win[2].shape[0], win[1] + win[2].shape[1]


def _inside(win: Window, rect: Rect) -> Tensor:
    """The part of ``win``'s map inside ``rect`` (which must lie within the window)."""
    y0, x0, m = win
    return m[rect[0] - y0 : rect[2] - y0, rect[1] - x0 : rect[3] - x0]


def _count(win: Window, rect: Rect) -> int:
    r = _intersect(_extent(win), rect)
    return int(_inside(win, r).sum()) if r is not None else 0


def _same(a: Window, b: Window, shared: Rect, match: float, cover: float) -> bool:
    """The merging rule for two windows, inside the ``shared`` region of their tiles."""
    both = _intersect(_extent(a), _extent(b))
    region = _intersect(both, shared) if both is not None else None
    if region is None:
        return False
    na, nb = _count(a, shared), _count(b, shared)
    if na == 0 or nb == 0:
        return False
    inter = int((_inside(a, region) & _inside(b, region)).sum())
    return inter / (na + nb - inter) >= match or inter / min(na, nb) >= cover


def _found(piece: tuple, tiled: list) -> bool:
    """Whether a tile's instance of ``piece``'s class overlaps it by half of the smaller mask."""
    a = piece[4]
    for p in tiled:
        b = p[4]
        both = _intersect(_extent(a), _extent(b)) if p[3] == piece[3] else None
        if both is None:
            continue
        smaller = min(int(a[2].sum()), int(b[2].sum()))
        if smaller and int((_inside(a, both) & _inside(b, both)).sum()) >= 0.5 * smaller:
            return True
    return False


def _merge(group: list) -> tuple[Tensor, float, int, Window]:
    """(box, score, label, window) of one object from its pieces: the union of their boxes and of their masks, the
    best score."""
    score, label = max(p[2] for p in group), group[0][3]
    if len(group) == 1:
        return group[0][1], score, label, group[0][4]
    boxes = torch.stack([p[1] for p in group])
    box = torch.cat([boxes[:, :2].min(0).values, boxes[:, 2:].max(0).values])
    wins = [p[4] for p in group if p[4][2].numel()]
    if not wins:
        return box, score, label, group[0][4]
    y0, x0 = min(w[0] for w in wins), min(w[1] for w in wins)
    y1, x1 = max(_extent(w)[2] for w in wins), max(_extent(w)[3] for w in wins)
    union = torch.zeros(y1 - y0, x1 - x0, dtype=torch.bool)
    for wy, wx, m in wins:
        union[wy - y0 : wy - y0 + m.shape[0], wx - x0 : wx - x0 + m.shape[1]] |= m
    return box, score, label, (y0, x0, union)


def _box_window(box: Tensor) -> Window:
    x0, y0 = int(box[0].floor()), int(box[1].floor())
    x1, y1 = max(int(box[2].ceil()), x0), max(int(box[3].ceil()), y0)
    return y0, x0, torch.ones(y1 - y0, x1 - x0, dtype=torch.bool)


def as_spec(slice: int | SliceSpec | None) -> SliceSpec | None:
    """``slice`` as given to predict: a tile size, a :class:`SliceSpec` or None (no slicing)."""
    return SliceSpec(int(slice)) if isinstance(slice, (int, float)) and not isinstance(slice, bool) else slice


def needs_slicing(image: Tensor, spec: SliceSpec | None) -> bool:
    """Whether ``spec`` cuts ``image``: never when the image fits one tile (then the result is plain prediction's)
    unless the full-image pass is asked for too."""
    return spec is not None and (max(image.shape[-2:]) > spec.size or spec.full)


def sliced_result(predictor, detect: Callable[[list[Tensor]], list], image: Tensor, path, frame) -> Result:
    """A predictor's Result for ``image`` by :func:`sliced_instances` (its ``slice``, ``conf``, ``max_det`` and
    ``categories``); the whole time counts as inference."""
    t0 = time.perf_counter()
    instances = sliced_instances(detect, image, predictor.slice, predictor.conf, predictor.max_det)
    speed = {"preprocess": 0.0, "inference": (time.perf_counter() - t0) * 1e3, "postprocess": 0.0}
    return Result(image, instances, predictor.categories, path, speed, frame)
