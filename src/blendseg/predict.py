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
