"""YOLACT's priors and SSD box coding, as pure functions (yolact.md §1.6, §2.3-2.4).

Coordinates are *relative*: x divided by the input width, y by the input height. Priors are (cx, cy, w, h).

Shape legend: P priors, G ground-truth boxes, L levels, A anchors per location.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

VARIANCES = (0.1, 0.2)


def make_priors(
    grid_sizes: list[tuple[int, int]],
    scales: list[tuple[float, ...]],
    aspect_ratios: tuple[float, ...],
    input_size: tuple[int, int],
    square: bool = False,
) -> Tensor:
    """(P, 4) priors, levels concatenated, inside a level row-major over (y, x), then for scale, for ratio.

    ``scales`` are pixels per level; a ratio r (w/h) gives w = s*sqrt(r)/W, h = s/sqrt(r)/H. ``square`` is the
    YOLACT v1 bug kept for its weights: h = w (in pixels), so every v1 anchor is a square of side s*sqrt(r).
    """
    H, W = input_size
    out = []
    for (gh, gw), level_scales in zip(grid_sizes, scales):
        sizes = []
        for s in level_scales:
            for r in aspect_ratios:
                w_px, h_px = s * math.sqrt(r), s / math.sqrt(r)
                sizes.append((w_px / W, (w_px if square else h_px) / H))
        wh = torch.tensor(sizes, dtype=torch.float32)  # (A, 2)
        ys, xs = torch.meshgrid(
            (torch.arange(gh, dtype=torch.float32) + 0.5) / gh,
            (torch.arange(gw, dtype=torch.float32) + 0.5) / gw,
            indexing="ij",
        )
        ctr = torch.stack([xs, ys], -1).reshape(-1, 1, 2).expand(-1, len(sizes), -1)
        out.append(torch.cat([ctr, wh[None].expand(ctr.shape[0], -1, -1)], -1).reshape(-1, 4))
    return torch.cat(out)


def point_form(priors: Tensor) -> Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], 1)


def encode_boxes(matched: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """(P, 4) SSD offsets of xyxy boxes (P, 4) w.r.t. their priors (P, 4) (cx, cy, w, h)."""
    g_cxcy = ((matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]) / (variances[0] * priors[:, 2:])
    g_wh = torch.log((matched[:, 2:] - matched[:, :2]) / priors[:, 2:]) / variances[1]
    return torch.cat([g_cxcy, g_wh], 1)


def decode_boxes(
    loc: Tensor, priors: Tensor, variances: tuple[float, float] = VARIANCES, clamp: bool = False
) -> Tensor:
    """(P, 4) xyxy boxes from offsets (P, 4); exp not clamped (official) unless ``clamp`` (log-size at most
    log(1000 / 16), mmdet's bound)."""
    cxcy = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    log_wh = loc[:, 2:] * variances[1]
    if clamp:
        log_wh = log_wh.clamp(max=math.log(1000.0 / 16))
    wh = priors[:, 2:] * torch.exp(log_wh)
    x1y1 = cxcy - wh / 2
    return torch.cat([x1y1, x1y1 + wh], 1)
