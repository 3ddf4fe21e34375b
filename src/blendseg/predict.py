"""Prediction on a dataset split or images with a trained checkpoint, drawing the results."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .data.coco import CocoInstances
from .data.transforms import transforms_for
from .modeling.fcos_inference import Detections
from .structures import pad_images
from .vis import draw_detections, save_image


def resize_for_test(cfg: TrainConfig, image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) image resized as the config's test pipeline does."""
    tf = transforms_for(cfg.data, train=False)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    return tf(image, empty)[0]


@torch.no_grad()
def predict_image(model: nn.Module, cfg: TrainConfig, image: torch.Tensor) -> Detections:
    """Detections for one (3, H, W) uint8 RGB image, at its size (test-time resize as the config says)."""
    resized = resize_for_test(cfg, image)
    device = next(model.parameters()).device
    out = model(pad_images([resized.float()], cfg.model.size_divisibility).to(device))
    return model.postprocess(out, [tuple(image.shape[-2:])])[0]


def draw_split(
    model: nn.Module, cfg: TrainConfig, dataset: CocoInstances, out_dir: str | Path, num: int = 6, score_th: float = 0.5
) -> list[Path]:
    """Ground truth (left) beside predictions scoring >= ``score_th`` (right) for the first ``num`` images of
    ``dataset``, read untransformed, as PNGs in ``out_dir``."""
    paths = []
    model.eval()
    for info in dataset.images[:num]:
        image = dataset.read_image(info)
        dets = predict_image(model, cfg, image)
        t = dataset.get_target(info)
        n = len(t["labels"])
        gt = Detections(t["boxes"], torch.ones(n), t["labels"], torch.zeros(n, 2), torch.zeros(n), torch.zeros(n))
        gap = torch.full((3, image.shape[1], 8), 255, dtype=torch.uint8)
        left = draw_detections(image, gt, dataset.class_names, 0.0)
        drawn = torch.cat([left, gap, draw_detections(image, dets, dataset.class_names, score_th)], dim=2)
        paths.append(save_image(drawn, Path(out_dir) / f"{Path(info['file_name']).stem}_pred.png"))
    return paths


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def image_files(sources: list[str]) -> list[Path]:
    """Image files named directly or found (sorted, not recursively) in named folders."""
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image or folder")
    return out


def predict_files(
    model: nn.Module, cfg: TrainConfig, files: list[Path], class_names: list[str], out_dir: str | Path,
    score_th: float = 0.3,
) -> Path:  # fmt: skip
    """Draw the predictions scoring >= ``score_th`` on each image (``<name>_pred.png`` in ``out_dir``) and write
    ``predictions.json``: per image its boxes (xyxy), scores, class names and masks as COCO RLE."""
    import json

    import numpy as np
    from PIL import Image

    from .data.rle import encode

    out_dir = Path(out_dir)
    records = []
    for f in files:
        try:
            with Image.open(f) as pil:
                image = torch.from_numpy(np.asarray(pil.convert("RGB")).copy()).permute(2, 0, 1)
        except OSError as e:
            print(f"warning: {f}: cannot read image ({e}); skipped")
            continue
        dets = predict_image(model, cfg, image)
        keep = dets.scores >= score_th
        dets = dets[keep]
        save_image(draw_detections(image, dets, class_names, score_th), out_dir / f"{f.stem}_pred.png")
        masks = dets.masks.cpu().numpy() if dets.masks is not None else None
        records.append({
            "file": str(f),
            "instances": [
                {
                    "box": [round(float(v), 2) for v in dets.boxes[i].tolist()],
                    "score": round(float(dets.scores[i]), 4),
                    "class": class_names[int(dets.labels[i])],
                    **({"segmentation": encode(masks[i])} if masks is not None else {}),
                }
                for i in range(len(dets))
            ],
        })  # fmt: skip
    path = out_dir / "predictions.json"
    path.write_text(json.dumps(records))
    return path
