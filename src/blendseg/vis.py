"""Drawing detections on images (torchvision.utils) for demos and run folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from .modeling.fcos_inference import Detections

PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def draw_detections(image: Tensor, dets: Detections, class_names: list[str], score_th: float = 0.3) -> Tensor:
    """(3, H, W) uint8 image with boxes (and masks, when present) of detections scoring >= ``score_th``."""
    keep = dets.scores >= score_th
    boxes, labels, scores = dets.boxes[keep].cpu(), dets.labels[keep].cpu(), dets.scores[keep].cpu()
    colors = [PALETTE[int(c) % len(PALETTE)] for c in labels]
    out = image.to(torch.uint8).cpu()
    if dets.masks is not None and keep.any():
        out = draw_segmentation_masks(out, dets.masks[keep].cpu().bool(), alpha=0.45, colors=colors)
    text = [f"{class_names[int(c)]} {float(s):.2f}" if s < 1 else class_names[int(c)] for c, s in zip(labels, scores)]
    if len(boxes):
        out = draw_bounding_boxes(out, boxes, labels=text, colors=colors, width=2)
    return out


def save_image(image: Tensor, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image.permute(1, 2, 0).numpy())).save(path)
    return path
