"""Sliced prediction for large images with small objects: the image cut into overlapping square tiles, each tile
predicted as an image of its own (the model's test-time resize enlarges what is small), and the tiles' instances
merged back by their *masks* in image coordinates.

The merging rule. The tiles' instances are taken best score first. Each joins the first object already made (best
score first) that is of its class, has no instance from its tile yet (one tile never sees an object twice: the
model's NMS has spoken there), and that it matches: inside the region its tile shares with the tile of one of the
object's pieces, their masks overlap by IoU >= ``match`` (both tiles saw that region whole, so the same object shows
the same pixels there), or its own pixels there lie at least ``cover`` inside the piece's (a sliver at a tile's
edge). Otherwise it starts an object. The pixels a joining piece has outside every tile the object already has
pieces from complete the object's mask and box (a mask cut at a border is completed from the neighbouring tile);
inside those tiles the better-scoring pieces already say what the object is. So a low-scoring piece spread over
several objects joins none of them and ties none together. The optional full-image pass (SAHI's "standard
prediction") adds what no tile found: a full-image instance is dropped where it and a tile's instance of its class
overlap by half of the smaller mask, since the tile saw that object at a larger scale::

    +---------+-----+---------+        tile A = columns 0 .. 9, tile B = columns 6 .. 15, shared band 6 .. 9
    | A    ###|#####|###    B |        the object's pieces in A and in B agree inside the band (IoU >= match):
    |      ###|#####|###      |        one object; B's pixels right of column 9 complete A's piece
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

from ..ops.masks import mask_extent
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
    tiled = [p for p in pieces if p[0] != whole]
    objects = _merge(tiled, rects, spec.match, spec.cover)
    objects += [_Object(p) for p in pieces if p[0] == whole and not _found(p, tiled)]
    merged = sorted(objects, key=lambda o: -o.score)[:max_det]
    boxes = torch.stack([o.box for o in merged]) if merged else torch.zeros(0, 4)
    scores = torch.tensor([o.score for o in merged], dtype=torch.float32)
    labels = torch.tensor([o.label for o in merged], dtype=torch.int64)
    masks = WindowMasks([o.window for o in merged], (h, w)) if masks_made else None
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


class _Object:
    """One merged object: its first (best-scoring) piece's score and label, its pieces' tiles, the pieces it
    holds (for the rule) and its mask as a window, grown as pieces join."""

    def __init__(self, piece: tuple) -> None:
        self.score, self.label, self.box, self.window = piece[2], piece[3], piece[1].clone(), piece[4]
        self.pieces, self.tiles = [piece], {piece[0]}

    def matches(self, piece: tuple, rects: list[Rect], match: float, cover: float) -> bool:
        """Whether ``piece`` (from a tile this object has no piece from) is this object, by the rule, against
        any of its pieces."""
        for q in self.pieces:
            shared = _intersect(rects[piece[0]], rects[q[0]])
            if shared is not None and _same(piece[4], q[4], shared, match, cover):
                return True
        return False

    def join(self, piece: tuple, rects: list[Rect]) -> None:
        """Take ``piece`` in: its pixels outside every tile the object already has pieces from complete the mask
        (inside them, the better-scoring pieces already say what the object is), and they grow the box."""
        new = piece[4][2].clone()
        py, px = piece[4][0], piece[4][1]
        for t in self.tiles:
            r = _intersect(rects[t], _extent(piece[4]))
            if r is not None:
                new[r[0] - py : r[2] - py, r[1] - px : r[3] - px] = False
        self.pieces.append(piece)
        self.tiles.add(piece[0])
        extent = mask_extent(new)
        if extent is None:
            return
        y0, x0, y1, x1 = extent
        added = torch.tensor([px + x0, py + y0, px + x1, py + y1], dtype=torch.float32)
        self.box = torch.cat([torch.minimum(self.box[:2], added[:2]), torch.maximum(self.box[2:], added[2:])])
        self.window = _union(self.window, (py, px, new))


def _merge(pieces: list, rects: list[Rect], match: float, cover: float) -> list[_Object]:
    """Greedy, best score first: a piece joins the first object of its class (best score first) that it matches
    and that has no piece from its tile yet; else it starts an object. A low-scoring piece thus joins at most one
    object and never ties two together."""
    objects: list[_Object] = []
    boxes = torch.zeros(0, 4)
    for p in sorted(pieces, key=lambda p: -p[2]):
        b = p[1]
        near = ((boxes[:, 0] < b[2]) & (boxes[:, 2] > b[0]) & (boxes[:, 1] < b[3]) & (boxes[:, 3] > b[1])).nonzero()
        for k in near[:, 0].tolist():
            o = objects[k]
            if o.label == p[3] and p[0] not in o.tiles and o.matches(p, rects, match, cover):
                o.join(p, rects)
                boxes[k] = o.box
                break
        else:
            objects.append(_Object(p))
            boxes = torch.cat([boxes, p[1][None]])
    return objects


def _union(a: Window, b: Window) -> Window:
    """The union of two windows' masks, as one window over both."""
    if not a[2].numel():
        return b
    y0, x0 = min(a[0], b[0]), min(a[1], b[1])
    y1, x1 = max(_extent(a)[2], _extent(b)[2]), max(_extent(a)[3], _extent(b)[3])
    out = torch.zeros(y1 - y0, x1 - x0, dtype=torch.bool)
    for wy, wx, m in (a, b):
        out[wy - y0 : wy - y0 + m.shape[0], wx - x0 : wx - x0 + m.shape[1]] |= m
    return y0, x0, out


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
    """The merging rule for a newcomer ``a`` and an object's piece ``b``, inside the ``shared`` region of their
    tiles: IoU >= ``match``, or ``a``'s pixels there lie ``cover`` inside ``b``'s (a sliver at a tile's edge; not
    the other way round, so a sloppy piece over several objects is not taken for any of them)."""
    both = _intersect(_extent(a), _extent(b))
    region = _intersect(both, shared) if both is not None else None
    if region is None:
        return False
    na, nb = _count(a, shared), _count(b, shared)
    if na == 0 or nb == 0:
        return False
    inter = int((_inside(a, region) & _inside(b, region)).sum())
    return inter / (na + nb - inter) >= match or inter / na >= cover


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
