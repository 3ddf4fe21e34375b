"""Drawing detections on images (torchvision.utils) for demos and run folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import draw_bounding_boxes

from .modeling.fcos_inference import Detections

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def draw_detections(image: Tensor, dets: Detections, class_names: list[str], score_th: float = 0.3) -> Tensor:
    """(3, H, W) uint8 image with boxes (and masks, when present) of detections scoring >= ``score_th``; masks
    are drawn one instance at a time over its window (memory follows the boxes, not the picture)."""
    keep = dets.scores >= score_th
    boxes, labels, scores = dets.boxes[keep].cpu(), dets.labels[keep].cpu(), dets.scores[keep].cpu()
    colors = [PALETTE[int(c) % len(PALETTE)] for c in labels]
    out = image.to(torch.uint8).cpu().clone()
    if dets.masks is not None and keep.any():
        kept = dets.masks[keep]
        for i, color in enumerate(colors):
            y0, x0, window = kept.window(i)
            fill_window(out, y0, x0, window.cpu(), color, 0.45)
    text = [f"{class_names[int(c)]} {float(s):.2f}" if s < 1 else class_names[int(c)] for c, s in zip(labels, scores)]
    if len(boxes):
        out = draw_bounding_boxes(out, boxes, labels=text, colors=colors, width=2)
    return out


def fill_window(image: Tensor, y0: int, x0: int, window: Tensor, color: tuple[int, int, int], alpha: float) -> None:
    """Blend ``color`` into the (3, H, W) uint8 ``image``, in place, where the (h, w) bool ``window`` at (y0, x0)
    is True (``draw_segmentation_masks`` for one mask, without a full-image mask)."""
    if window.numel() == 0:
        return
    region = image[:, y0 : y0 + window.shape[0], x0 : x0 + window.shape[1]]
    tint = torch.tensor(color, dtype=torch.float32)[:, None, None]
    blended = (region.float() * (1 - alpha) + tint * alpha).round().to(torch.uint8)
    region.copy_(torch.where(window[None], blended, region))


def save_image(image: Tensor, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(path)
    return path


STUFF_PALETTE = [(110, 160, 220), (90, 150, 80), (40, 90, 160), (170, 130, 90), (150, 150, 150), (200, 180, 120)]


def draw_panoptic(image: Tensor, panoptic, thing_names: list[str], stuff_names: list[str]) -> Tensor:
    """(3, H, W) uint8 image with every segment of a :class:`~blendseg.structures.PanopticResult` filled (things in
    their class colour, stuff in muted ones; void left as is) and labelled at its centre ("class score" for things,
    the stuff name for stuff; ``stuff_names[k - 1]`` names stuff label k). Memory: a few H x W maps, whatever the
    number of segments."""
    from PIL import ImageDraw

    seg = panoptic.panoptic_seg.cpu().long()
    infos = panoptic.segments_info
    out = image.to(torch.uint8).cpu()
    if not infos:
        return out
    h, w = seg.shape
    ids = torch.tensor([s["id"] for s in infos])
    order = ids.argsort()
    pos = torch.searchsorted(ids[order], seg).clamp(max=len(ids) - 1)
    index = torch.where(ids[order][pos] == seg, order[pos] + 1, 0)  # (H, W): 1 + segment index, 0 = void
    palette = [PALETTE[s["category_id"] % len(PALETTE)] if s["isthing"] else STUFF_PALETTE[s["category_id"] % 6]
               for s in infos]  # fmt: skip
    colors = torch.tensor([(0, 0, 0), *palette], dtype=torch.float32)
    alpha = 0.55 * (index > 0).float()
    blended = out.float() * (1 - alpha) + colors[index].permute(2, 0, 1) * alpha
    pil = Image.fromarray(np.ascontiguousarray(blended.round().byte().permute(1, 2, 0).numpy()))
    flat = index.flatten()
    counts = torch.bincount(flat, minlength=len(infos) + 1).clamp(min=1).float()
    cy = torch.bincount(flat, torch.arange(h).repeat_interleave(w).float(), len(infos) + 1) / counts
    cx = torch.bincount(flat, torch.arange(w).repeat(h).float(), len(infos) + 1) / counts
    draw = ImageDraw.Draw(pil)
    for k, s in enumerate(infos, start=1):
        if s["isthing"]:
            text = f"{_name(thing_names, s['category_id'])} {s['score']:.2f}"
        else:
            text = _name(stuff_names, s["category_id"] - 1)
        box = draw.textbbox((float(cx[k]), float(cy[k])), text, anchor="mm")
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((float(cx[k]), float(cy[k])), text, fill=(255, 255, 255), anchor="mm")
    return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)


def _name(names: list[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else str(index)
