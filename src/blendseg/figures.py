"""What each method computes inside, as figures with titles and a legend that read without the terminal:
BlendMask's bases and, per instance, its pooled bases, attentions and blended mask (the paper's Fig. 1/3); YOLACT's
prototypes and, per instance, its coefficients and assembled mask; MEInst's code and decoded mask per instance.

``show_bases(model, cfg, image)`` picks the figure by ``cfg.model.arch``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor

from .zoo.archs import get_arch

TILE, PAD, TEXT = 96, 6, 12


def signed_tile(x: Tensor) -> Image.Image:
    """A 2-D map, blue below 0, white at 0, red above, scaled to its own max |value|."""
    x = x.detach().float().cpu()
    t = (x / x.abs().max().clamp(min=1e-6)).numpy()
    rgb = np.stack([np.where(t > 0, 1, 1 + t), 1 - np.abs(t), np.where(t < 0, 1, 1 - t)], -1)
    return Image.fromarray((rgb * 255).astype(np.uint8)).resize((TILE, TILE), Image.NEAREST)


def prob_tile(x: Tensor) -> Image.Image:
    """A 2-D map of values in [0, 1]: black 0 .. white 1 (not rescaled)."""
    x = x.detach().float().cpu().clamp(0, 1).numpy()
    return Image.fromarray((x * 255).astype(np.uint8)).convert("RGB").resize((TILE, TILE), Image.NEAREST)


def bars_tile(values: Tensor) -> Image.Image:
    """A bar per value (red up for > 0, blue down for < 0), scaled to the max |value|."""
    v = values.detach().float().cpu()
    v = v / v.abs().max().clamp(min=1e-6)
    img = Image.new("RGB", (TILE, TILE), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.line([(0, TILE // 2), (TILE, TILE // 2)], fill=(160, 160, 160))
    width = TILE / max(len(v), 1)
    for i, b in enumerate(v.tolist()):
        y = TILE // 2 - b * (TILE // 2 - 2)
        d.rectangle(
            [i * width, min(y, TILE // 2), (i + 1) * width - 1, max(y, TILE // 2)],
            fill=(200, 40, 40) if b > 0 else (40, 70, 200),
        )
    return img


def image_tile(image: Tensor, box: Tensor | None = None) -> Image.Image:
    """(3, H, W) image, or its crop at ``box`` (xyxy pixels), as a tile."""
    x = image.detach().cpu().clamp(0, 255).byte()
    if box is not None:
        h, w = x.shape[-2:]
        x0, y0 = int(box[0].clamp(0, w - 1)), int(box[1].clamp(0, h - 1))
        x1, y1 = max(int(box[2].clamp(1, w)), x0 + 1), max(int(box[3].clamp(1, h)), y0 + 1)
        x = x[:, y0:y1, x0:x1]
    return Image.fromarray(x.permute(1, 2, 0).numpy()).resize((TILE, TILE), Image.BILINEAR)


class Figure:
    """Rows of titled tiles under a figure title, a legend at the bottom."""

    def __init__(self, title: str, legend: list[str]) -> None:
        self.title, self.legend, self.rows = title, legend, []

    def row(self, label: str, tiles: list[tuple[str, Image.Image]]) -> None:
        self.rows.append((label, tiles))

    def render(self) -> Image.Image:
        cols = max((len(t) for _, t in self.rows), default=1)
        width = max(cols * (TILE + PAD) + PAD, 560)
        row_h = TEXT * 2 + TILE + PAD * 2
        height = TEXT * 3 + len(self.rows) * row_h + (len(self.legend) + 1) * TEXT + PAD
        canvas = Image.new("RGB", (width, height), (255, 255, 255))
        d = ImageDraw.Draw(canvas)
        d.text((PAD, PAD), self.title, fill=(0, 0, 0))
        y = TEXT * 3
        for label, tiles in self.rows:
            d.text((PAD, y), label, fill=(0, 0, 90))
            for i, (name, tile) in enumerate(tiles):
                x = PAD + i * (TILE + PAD)
                d.text((x, y + TEXT), name[:16], fill=(60, 60, 60))
                canvas.paste(tile, (x, y + TEXT * 2))
            y += row_h
        for line in self.legend:
            d.text((PAD, y), line, fill=(0, 0, 0))
            y += TEXT
        return canvas


def _forward(model, cfg, image: Tensor) -> tuple[Tensor, object]:
    from .inference.predictor import model_device, resize_for_test
    from .structures import pad_images

    x = resize_for_test(cfg, image)
    return x, model(pad_images([x.float()], cfg.model.size_divisibility).to(model_device(model)))


def _top(dets, conf: float, n: int):
    keep = (dets.scores >= conf).nonzero()[:, 0]
    return dets[keep[dets.scores[keep].argsort(descending=True)[:n]]]


def _name(names: list[str] | None, label: int) -> str:
    return names[label] if names and 0 <= label < len(names) else str(label)


@torch.no_grad()
def blendmask_figure(model, cfg, image: Tensor, names=None, conf: float = 0.3, max_instances: int = 6) -> Image.Image:
    from .ops.blend import pool_bases

    b = cfg.model.blendmask
    x, out = _forward(model, cfg, image)
    dets = _top(model.fcos.decode(out.fcos)[0], conf, max_instances)
    k = out.bases.shape[1]
    fig = Figure(
        f"BlendMask: {k} bases (stride {b.bases_stride}), {len(dets)} instance(s) scoring >= {conf}",
        [
            "bases, RoI bases: blue < 0 < red, each tile scaled to its own max |value|",
            "attention k: softmax over the K bases at each pixel (black 0 .. white 1), resized M x M -> R x R",
            "mask: sigmoid(sum_k attention_k * RoI basis_k), black 0 .. white 1 (>= 0.5 is the instance)",
        ],
    )
    fig.row(
        "input and bases", [("input", image_tile(x))] + [(f"basis {i}", signed_tile(out.bases[0, i])) for i in range(k)]
    )
    if len(dets):
        idx = torch.zeros(len(dets), dtype=torch.int64, device=out.bases.device)
        rois = pool_bases(out.bases, dets.boxes, idx, b.bottom_resolution, b.bases_stride, b.bottom_sampling)
        logits = model.mask_logits(out.bases, [dets])[0]
    for j in range(len(dets)):
        tiles = [("box crop", image_tile(x, dets.boxes[j]))]
        tiles += [(f"RoI basis {i}", signed_tile(rois[j, i])) for i in range(k)]
        if dets.embeds is not None:  # the assembler ablation has no attentions
            m = int(round((dets.embeds.shape[1] / k) ** 0.5))
            attn = F.interpolate(dets.embeds[j : j + 1].view(1, k, m, m), rois.shape[-2:], mode=b.top_interp)
            tiles += [(f"attention {i}", prob_tile(a)) for i, a in enumerate(attn.softmax(1)[0])]
        tiles.append(("mask", prob_tile(logits[j].sigmoid())))
        label = f"#{j} {_name(names, int(dets.labels[j]))} {float(dets.scores[j]):.2f}"
        fig.row(label, tiles)
    return fig.render()


@torch.no_grad()
def yolact_figure(model, cfg, image: Tensor, names=None, conf: float = 0.3, max_instances: int = 6) -> Image.Image:
    from .ops.masks import crop_masks

    x, out = _forward(model, cfg, image)
    dets = _top(model.detect(out)[0], conf, max_instances)
    proto = out.proto[0]  # (h, w, k)
    k = proto.shape[-1]
    fig = Figure(
        f"YOLACT: {k} prototypes, {len(dets)} instance(s) scoring >= {conf}",
        [
            "prototypes (after ReLU): black 0 .. white max, each tile scaled to its own max",
            "coefficients: one bar per prototype (tanh, red > 0, blue < 0), scaled to the max |value|",
            "mask: sigmoid(prototypes @ coefficients) cropped to the box, black 0 .. white 1",
        ],
    )
    per_row = 12
    for start in range(0, k, per_row):
        tiles = [
            (f"proto {i}", prob_tile(proto[..., i] / proto[..., i].max().clamp(min=1e-6)))
            for i in range(start, min(k, start + per_row))
        ]
        fig.row("prototypes" if start == 0 else "", ([("input", image_tile(x))] if start == 0 else []) + tiles)
    h, w = out.input_size
    for j in range(len(dets)):
        mask = crop_masks(torch.sigmoid(proto @ dets.coefs[j])[None], dets.boxes[j : j + 1])[0]
        box = dets.boxes[j] * torch.tensor([w, h, w, h], device=dets.boxes.device)
        tiles = [
            ("box crop", image_tile(x, box)),
            ("coefficients", bars_tile(dets.coefs[j])),
            ("mask", prob_tile(mask)),
        ]
        fig.row(f"#{j} {_name(names, int(dets.labels[j]))} {float(dets.scores[j]):.2f}", tiles)
    return fig.render()


@torch.no_grad()
def meinst_figure(model, cfg, image: Tensor, names=None, conf: float = 0.3, max_instances: int = 6) -> Image.Image:
    x, out = _forward(model, cfg, image)
    dets = _top(model.fcos.decode(out.fcos)[0], conf, max_instances)
    s = cfg.model.meinst.mask_size
    fig = Figure(
        f"MEInst: {cfg.model.meinst.dim_mask}-d mask codes decoded to {s} x {s}, {len(dets)} instance(s) >= {conf}",
        [
            "code: the regressed vector, one bar per dimension (red > 0, blue < 0), scaled to the max |value|",
            f"decoded mask: the code through the PCA decoder, {s} x {s} probabilities, black 0 .. white 1",
        ],
    )
    fig.row("input", [("input", image_tile(x))])
    probs = model.mask_probs([dets])[0] if len(dets) else None
    for j in range(len(dets)):
        tiles = [("box crop", image_tile(x, dets.boxes[j])), ("code", bars_tile(dets.embeds[j]))]
        tiles.append(("decoded mask", prob_tile(probs[j])))
        fig.row(f"#{j} {_name(names, int(dets.labels[j]))} {float(dets.scores[j]):.2f}", tiles)
    return fig.render()


def show_bases(model, cfg, image: Tensor, names: list[str] | None = None, conf: float = 0.3) -> Image.Image | None:
    """The figure of ``cfg.model.arch`` for one (3, H, W) uint8 image, or None for box-only models (FCOS)."""
    fn = get_arch(cfg.model.arch).part("figure")
    return fn(model.eval(), cfg, image, names, conf) if fn is not None else None
