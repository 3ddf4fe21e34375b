"""Drawing predictions on images: instances (masks, boxes, "name score" labels) and panoptic segments.

Drawing works on one HWC copy of the picture: masks are blended one instance at a time over its window, panoptic
segments a band of rows at a time, so memory follows the picture once, not the picture times the instances.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .modeling.core.fcos_inference import Detections

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]
# fills of single instances: Kelly's 20 colours of maximum contrast
INSTANCE_PALETTE = [
    (255, 179, 0),
    (128, 62, 117),
    (255, 104, 0),
    (166, 189, 215),
    (193, 0, 32),
    (206, 162, 98),
    (129, 112, 102),
    (0, 125, 52),
    (246, 118, 142),
    (0, 83, 138),
    (255, 122, 92),
    (83, 55, 122),
    (255, 142, 0),
    (179, 40, 81),
    (244, 200, 0),
    (127, 24, 13),
    (147, 170, 0),
    (89, 51, 21),
    (241, 58, 19),
    (35, 44, 22),
]
STUFF_PALETTE = [(110, 160, 220), (90, 150, 80), (40, 90, 160), (170, 130, 90), (150, 150, 150), (200, 180, 120)]


@dataclass(frozen=True)
class DrawStyle:
    """How instances are drawn (ultralytics' plotting options): ``labels`` / ``conf`` print the "name score" tags,
    ``line_width`` (None: scaled to the picture) for boxes and outlines, ``boxes`` draws them."""

    labels: bool = True
    conf: bool = True
    line_width: int | None = None
    boxes: bool = True


def render_detections(
    image: Tensor,
    dets,
    class_names: list[str],
    score_th: float = 0.3,
    track_ids: Tensor | None = None,
    style: DrawStyle = DrawStyle(),
) -> Image.Image:
    """The (3, H, W) uint8 image with the masks, boxes and labels of detections scoring >= ``score_th``, as a PIL
    image (scores of 1 or more, e.g. ground truth, are not printed). Each instance's mask is filled in its own
    colour and outlined, with its box, in its class's colour, so neighbours of one class stay apart on dense
    scenes; a label's size follows its box as well as the picture. With ``track_ids`` the fill is the track's
    colour (the same in every frame) and the label "#id class score"."""
    keep = (dets.scores >= score_th).nonzero()[:, 0]
    boxes, labels, scores = dets.boxes[keep].cpu(), dets.labels[keep].cpu(), dets.scores[keep].cpu()
    ids = track_ids[keep].tolist() if track_ids is not None else [-1] * len(keep)
    classes = [PALETTE[int(c) % len(PALETTE)] for c in labels.tolist()]
    fills = [INSTANCE_PALETTE[(t if t >= 0 else i) % len(INSTANCE_PALETTE)] for i, t in enumerate(ids)]
    canvas = np.array(image.to(torch.uint8).cpu().permute(1, 2, 0).numpy())  # the one HWC copy
    draw_scale = max(1, min(canvas.shape[:2]) // 300)
    width = style.line_width or draw_scale + 1
    masks = getattr(dets, "masks", None)
    if masks is not None and len(keep):
        kept = masks[keep]
        for i in range(len(keep)):
            y0, x0, window = kept.window(i)
            window = window.cpu().numpy()
            fill_window(canvas, y0, x0, window, fills[i], 0.45)
            fill_window(canvas, y0, x0, outline(window, max(1, width // 2)), classes[i], 1.0)
    pil = Image.fromarray(canvas)
    del canvas
    draw, fonts = ImageDraw.Draw(pil), _Fonts(min(pil.size))
    for box, c, s, color, t in zip(boxes.tolist(), labels.tolist(), scores.tolist(), classes, ids):
        if style.boxes:
            draw.rectangle(box, outline=color, width=width)
        if not style.labels:
            continue
        text = f"{_name(class_names, c)} {s:.2f}" if s < 1 and style.conf else _name(class_names, c)
        text = f"#{t} {text}" if t >= 0 else text
        _label(draw, (box[0], box[1]), text, fonts.for_box(box), color, anchor="lb")
    return pil


def outline(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The pixels of ``mask`` within ``width`` of its edge (a bool map of the same shape)."""
    if mask.size == 0:
        return mask
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        shrunk[[0, -1], :] = False
        shrunk[:, [0, -1]] = False
        inner = shrunk
    return mask & ~inner


def draw_detections(image: Tensor, dets: Detections, class_names: list[str], score_th: float = 0.3) -> Tensor:
    """:func:`render_detections` as a (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.array(render_detections(image, dets, class_names, score_th))).permute(2, 0, 1)


def fill_window(canvas: np.ndarray, y0: int, x0: int, window: np.ndarray, color, alpha: float) -> None:
    """Blend ``color`` into the (H, W, 3) uint8 ``canvas``, in place, where the (h, w) bool ``window`` at (y0, x0)
    is True."""
    if window.size == 0:
        return
    region = canvas[y0 : y0 + window.shape[0], x0 : x0 + window.shape[1]]
    region[window] = (region[window] * (1 - alpha) + np.asarray(color) * alpha + 0.5).astype(np.uint8)


def render_panoptic(image: Tensor, panoptic, thing_names: list[str], stuff_names: list[str]) -> Image.Image:
    """The (3, H, W) uint8 image with every segment of a :class:`~blendseg.structures.PanopticResult` filled (things
    in their class colour, stuff in muted ones, void left as is) and labelled at its centre ("class score" for
    things, the stuff name for stuff; ``stuff_names[k - 1]`` names stuff label k), as a PIL image."""
    infos = panoptic.segments_info
    canvas = np.array(image.to(torch.uint8).cpu().permute(1, 2, 0).numpy())
    seg = panoptic.panoptic_seg.cpu().numpy()
    h, w = seg.shape
    ids = np.array([s["id"] for s in infos], np.int64)
    lut = np.array([(0, 0, 0)] + [_segment_color(s) for s in infos], np.float32)
    order = np.argsort(ids)
    rows, sums = np.arange(h, dtype=np.float64), np.zeros((len(infos) + 1, 3))  # per segment: count, sum y, sum x
    for a in range(0, h, 256):  # a band of rows at a time
        band = seg[a : a + 256].astype(np.int64)
        index = np.zeros_like(band)
        if len(ids):
            pos = np.searchsorted(ids[order], band).clip(max=len(ids) - 1)
            index = np.where(ids[order][pos] == band, order[pos] + 1, 0)  # 1 + segment index, 0 = void
        region = canvas[a : a + 256]
        on = index > 0
        region[on] = (region[on] * 0.45 + lut[index[on]] * 0.55 + 0.5).astype(np.uint8)
        flat = index.ravel()
        sums[:, 0] += np.bincount(flat, minlength=len(lut))
        sums[:, 1] += np.bincount(flat, np.repeat(rows[a : a + 256], w), minlength=len(lut))
        sums[:, 2] += np.bincount(flat, np.tile(np.arange(w, dtype=np.float64), len(band)), minlength=len(lut))
    pil = Image.fromarray(canvas)
    del canvas
    draw, font, _ = _pen(pil)
    for k, s in enumerate(infos, start=1):
        if sums[k, 0] == 0:
            continue
        cy, cx = sums[k, 1] / sums[k, 0], sums[k, 2] / sums[k, 0]
        if s["isthing"]:
            text = f"{_name(thing_names, s['category_id'])} {s['score']:.2f}"
        else:
            text = _name(stuff_names, s["category_id"] - 1)
        _label(draw, (cx, cy), text, font, (0, 0, 0), anchor="mm")
    return pil


def save_image(image: Tensor, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(path)
    return path


def _segment_color(s: dict) -> tuple[int, int, int]:
    return PALETTE[s["category_id"] % len(PALETTE)] if s["isthing"] else STUFF_PALETTE[s["category_id"] % 6]


def _pen(pil: Image.Image) -> tuple[ImageDraw.ImageDraw, ImageFont.ImageFont, int]:
    """A drawer, a font and a line width that scale with the picture (readable on a phone photo too)."""
    short = min(pil.size)
    return ImageDraw.Draw(pil), _Fonts(short).get(max(11, short // 45)), max(2, short // 300)


class _Fonts:
    """Fonts by size: labels as large as the picture allows (1/45 of its short side, at least 11 px) and no taller
    than a third of their box (at least 8 px), so the labels of small, dense instances do not cover them."""

    def __init__(self, short: int) -> None:
        self.largest, self.cache = max(11, short // 45), {}

    def get(self, size: int) -> ImageFont.ImageFont:
        if size not in self.cache:
            try:
                self.cache[size] = ImageFont.load_default(size=size)
            except TypeError:  # Pillow < 10.1: the fixed bitmap font
                self.cache[size] = ImageFont.load_default()
        return self.cache[size]

    def for_box(self, box: list[float]) -> ImageFont.ImageFont:
        return self.get(int(min(self.largest, max(8, (box[3] - box[1]) // 3))))


def _label(draw: ImageDraw.ImageDraw, xy, text: str, font, background, anchor: str) -> None:
    box = draw.textbbox(xy, text, font=font, anchor=anchor)
    draw.rectangle(box, fill=background)
    draw.text(xy, text, fill=(255, 255, 255), font=font, anchor=anchor)


def _name(names: list[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else str(index)
