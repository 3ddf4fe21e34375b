"""Prediction on a dataset split or images with a trained checkpoint, drawing the results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig
from .data.check import DataError
from .data.coco import CocoInstances
from .data.images import is_image_file, read_image
from .data.transforms import transforms_for
from .modeling.fcos_inference import Detections
from .structures import pad_images
from .vis import draw_detections, draw_panoptic, save_image


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


def image_files(sources: list[str]) -> list[Path]:
    """Image files named directly or found (sorted, not recursively) in named folders."""
    out: list[Path] = []
    for s in sources:
        p = Path(s)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if is_image_file(f))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such image or folder")
    return out


@dataclass(frozen=True)
class Categories:
    """Names and dataset category ids of a model's classes: things (labels 0..C-1) and, for panoptic models, stuff
    (semantic labels 1..S). Checkpoints without them (e.g. converted official ones) get "0".. and ids 1..C, C+1..."""

    thing_names: list[str]
    thing_ids: list[int]
    stuff_names: list[str] = field(default_factory=list)
    stuff_ids: list[int] = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, cfg: TrainConfig) -> Categories:
        num = getattr(cfg.model, cfg.model.classes_field).num_classes
        names = list(ckpt.get("class_names") or [str(i) for i in range(num)])
        ids = list(ckpt.get("contiguous_to_cat_id") or range(1, num + 1))
        panoptic = getattr(cfg.model, "panoptic", None)
        num_stuff = panoptic.num_classes - 1 if panoptic is not None and panoptic.enabled else 0
        stuff_names = list(ckpt.get("stuff_names") or [f"stuff{k}" for k in range(1, num_stuff + 1)])
        stuff_ids = list(
            ckpt.get("stuff_cat_ids") or range(max(ids, default=0) + 1, max(ids, default=0) + 1 + num_stuff)
        )
        return cls(names, ids, stuff_names, stuff_ids)

    def coco_panoptic(self) -> list[dict]:
        """The categories list of a COCO panoptic JSON."""
        things = [{"id": i, "name": n, "isthing": 1} for i, n in zip(self.thing_ids, self.thing_names)]
        return things + [{"id": i, "name": n, "isthing": 0} for i, n in zip(self.stuff_ids, self.stuff_names)]


def predict_files(
    model: nn.Module, cfg: TrainConfig, files: list[Path], categories: Categories, out_dir: str | Path,
    score_th: float = 0.3, save_panoptic: bool = False,
) -> Path:  # fmt: skip
    """Draw the predictions scoring >= ``score_th`` on each image (``<name>_pred.png`` in ``out_dir``; panoptic
    models: every stuff and thing segment) and write ``predictions.json``: per image its boxes (xyxy), scores, class
    names and masks as COCO RLE. With ``save_panoptic`` (panoptic models) also the COCO panoptic format:
    ``panoptic/<name>.png`` and ``panoptic.json``."""
    import json

    from PIL import Image

    from .data.panoptic import id2rgb
    from .data.rle import encode
    from .evaluation.panoptic import to_coco_panoptic

    out_dir = Path(out_dir)
    records, pan_images, pan_annotations = [], [], []
    class_names = categories.thing_names
    for f in files:
        try:
            image = read_image(f)
        except DataError as e:
            print(f"warning: {e}; skipped")
            continue
        dets = predict_image(model, cfg, image)
        keep = dets.scores >= score_th
        dets = dets[keep]
        if dets.panoptic is not None:
            drawn = draw_panoptic(image, dets.panoptic, class_names, categories.stuff_names)
        else:
            drawn = draw_detections(image, dets, class_names, score_th)
        save_image(drawn, out_dir / f"{f.stem}_pred.png")
        if save_panoptic and dets.panoptic is not None:
            ids, segments = to_coco_panoptic(dets.panoptic, categories.thing_ids, categories.stuff_ids)
            (out_dir / "panoptic").mkdir(parents=True, exist_ok=True)
            Image.fromarray(id2rgb(ids)).save(out_dir / "panoptic" / f"{f.stem}.png")
            iid = len(pan_images) + 1
            pan_images.append({"id": iid, "file_name": f.name, "height": ids.shape[0], "width": ids.shape[1]})
            pan_annotations.append({"image_id": iid, "file_name": f"{f.stem}.png", "segments_info": segments})
        masks = dets.masks
        records.append({
            "file": str(f),
            "instances": [
                {
                    "box": [round(float(v), 2) for v in dets.boxes[i].tolist()],
                    "score": round(float(dets.scores[i]), 4),
                    "class": class_names[int(dets.labels[i])],
                    **({"segmentation": encode(masks[i].cpu().numpy())} if masks is not None else {}),
                }
                for i in range(len(dets))
            ],
        })  # fmt: skip
    path = out_dir / "predictions.json"
    path.write_text(json.dumps(records))
    if pan_images:
        pan = {"images": pan_images, "annotations": pan_annotations, "categories": categories.coco_panoptic()}
        (out_dir / "panoptic.json").write_text(json.dumps(pan))
    return path
