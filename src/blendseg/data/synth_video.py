"""Synthetic videos with ground-truth track ids: the shapes of :mod:`~blendseg.data.synth` moving, turning,
occluding each other, entering and leaving the frame, some of them still, under a jittering camera.

``synthesize_video(out, frames=60)`` writes one sequence in MOTChallenge's layout (``img1/000001.png``...,
``gt/gt.txt`` in the MOTS format of :mod:`~blendseg.data.mots`, ``seqinfo.ini``), deterministic in its arguments.
A ground-truth object is the *visible* part of a shape (what is in front of it removed), listed in every frame where
at least ``min_pixels`` of it show; its id is ``class * 1000 + k`` for the sequence's k-th shape (from 1).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .mots import MotsObject, mots_object, write_mots, write_seqinfo
from .synth import CLASSES, _background, _raster, _shape_polygons


@dataclass(frozen=True)
class Mover:
    """One shape of a video: its class index, radius and shape seed (the same outline every frame), colour, start
    centre and velocity (pixels a frame), start angle and spin (radians a frame), and depth (higher: in front)."""

    cls: int
    r: float
    shape_seed: int
    colour: tuple[float, float, float]
    x: float
    y: float
    vx: float
    vy: float
    angle: float
    spin: float
    depth: int

    def at(self, t: int, dx: float = 0.0, dy: float = 0.0) -> tuple[list, list]:
        """(outer polygons, holes) at frame ``t`` (from 0), moved by the camera's (dx, dy)."""
        cx, cy = self.x + self.vx * t + dx, self.y + self.vy * t + dy
        polys, holes = _shape_polygons(np.random.default_rng(self.shape_seed), CLASSES[self.cls], cx, cy, self.r)
        a = self.angle + self.spin * t
        c, s = math.cos(a), math.sin(a)
        turn = lambda p: [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in p]  # noqa: E731
        return [turn(p) for p in polys], [turn(p) for p in holes]


def movers(rng: np.random.Generator, n: int, h: int, w: int, still: float = 0.25, enter: float = 0.3) -> list[Mover]:
    """``n`` shapes: a fraction ``still`` of them never move; a fraction ``enter`` start outside an edge and come
    in; the rest start inside and drift (some of them out)."""
    out = []
    for k in range(n):
        cls, r = int(rng.integers(len(CLASSES))), float(rng.uniform(0.07, 0.13) * min(h, w))
        colour = tuple(float(v) for v in rng.uniform(30, 255, 3))
        x, y = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
        speed, heading = float(rng.uniform(0.8, 2.5)), float(rng.uniform(0, 2 * math.pi))
        vx, vy, spin = speed * math.cos(heading), speed * math.sin(heading), float(rng.uniform(-0.05, 0.05))
        kind = rng.random()
        if kind < still:
            vx = vy = spin = 0.0
        elif kind < still + enter:  # from outside the left or right edge, heading in
            side = rng.integers(2)
            x = -1.5 * r if side == 0 else w + 1.5 * r
            vx = abs(vx) + 0.5 if side == 0 else -abs(vx) - 0.5
        angle, seed = float(rng.uniform(0, 2 * math.pi)), int(rng.integers(2**31))
        out.append(Mover(cls, r, seed, colour, x, y, vx, vy, angle, spin, depth=k))
    return out


def render_frame(
    objects: list[Mover],
    t: int,
    background: np.ndarray,
    margin: int,
    shift: tuple[int, int],
    noise_seed: int,
    min_pixels: int = 20,
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """Frame ``t``: the (H, W, 3) uint8 image (the camera moved by ``shift`` (dx, dy) over a background ``margin``
    pixels larger on each side) and each shown object's (index, visible mask)."""
    h, w = background.shape[0] - 2 * margin, background.shape[1] - 2 * margin
    dx, dy = shift
    img = background[margin - dy : margin - dy + h, margin - dx : margin - dx + w].astype(np.float64)
    rng = np.random.default_rng(noise_seed)
    owner = np.full((h, w), -1, np.int32)
    for k in sorted(range(len(objects)), key=lambda k: objects[k].depth):  # back to front
        mask = _raster(*objects[k].at(t, dx, dy), h, w)
        if mask.any():
            ys, xs = np.nonzero(mask)
            img[ys, xs] = np.asarray(objects[k].colour)[None] + rng.normal(0, 3, (len(ys), 3))
            owner[mask] = k
    shown = [(k, owner == k) for k in range(len(objects))]
    return np.clip(img, 0, 255).astype(np.uint8), [(k, m) for k, m in shown if m.sum() >= min_pixels]


def synthesize_video(
    out: str | os.PathLike,
    frames: int = 60,
    size: tuple[int, int] = (192, 256),
    objects: int = 8,
    seed: int = 0,
    still: float = 0.25,
    jitter: float = 1.5,
    fps: float = 10.0,
    name: str = "synth-01",
) -> Path:
    """Write one sequence under ``out/name`` (see the module's docstring): ``frames`` frames of ``size`` (h, w),
    ``objects`` shapes, camera jitter of ``jitter`` pixels (standard deviation). Returns the sequence folder."""
    h, w = size
    rng = np.random.default_rng([seed, 11])
    margin = int(math.ceil(4 * jitter)) + 1
    background = _background(rng, h + 2 * margin, w + 2 * margin)
    shapes = movers(rng, objects, h, w, still=still)
    folder = Path(out) / name
    (folder / "img1").mkdir(parents=True, exist_ok=True)
    gt: list[MotsObject] = []
    for t in range(frames):
        shift = tuple(int(v) for v in np.clip(np.round(rng.normal(0, jitter, 2)), -margin + 1, margin - 1))
        img, shown = render_frame(shapes, t, background, margin, shift, noise_seed=int(rng.integers(2**31)))
        Image.fromarray(img).save(folder / "img1" / f"{t + 1:06d}.png")
        gt += [mots_object(t + 1, (shapes[k].cls + 1) * 1000 + k + 1, shapes[k].cls + 1, m) for k, m in shown]
    write_mots(folder / "gt" / "gt.txt", gt)
    write_seqinfo(folder, name, frames, size, fps)
    return folder
