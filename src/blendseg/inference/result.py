"""One image's predictions for people and tools: boxes, scores, labels and names, masks made on first access,
drawing, COCO / JSON records, and the class names and category ids they map to.

Shape legend: N instances, H x W the original image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..config import TrainConfig
from ..errors import MissingExtra


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
        first = max(ids, default=0) + 1
        stuff_ids = list(ckpt.get("stuff_cat_ids") or range(first, first + num_stuff))
        return cls(names, ids, stuff_names, stuff_ids)

    def coco_panoptic(self) -> list[dict]:
        """The categories list of a COCO panoptic JSON."""
        things = [{"id": i, "name": n, "isthing": 1} for i, n in zip(self.thing_ids, self.thing_names)]
        return things + [{"id": i, "name": n, "isthing": 0} for i, n in zip(self.stuff_ids, self.stuff_names)]


class Result:
    """Predictions on one image, in its original pixels.

    Attributes:
        boxes: (N, 4) float32 xyxy. ``scores``: (N,). ``labels``: (N,) int64. ``names``: label -> class name.
        masks: (N, H, W) bool, made on first access (None for box-only models); ``compact_masks`` keeps them as
            per-box probabilities (:class:`~blendseg.structures.LazyMasks`).
        panoptic: the :class:`~blendseg.structures.PanopticResult` of panoptic models, else None.
        image: (3, H, W) uint8 RGB as read (EXIF applied); ``image_size`` (H, W); ``path`` or None; ``frame``: the
            frame index for videos, else None.
        speed: milliseconds of ``preprocess``, ``inference`` and ``postprocess``.
        track_ids: (N,) int64 track ids from :meth:`~blendseg.api.Model.track` (-1: a detection no track took),
            else None.
    """

    def __init__(
        self,
        image: Tensor,
        detections,
        categories: Categories,
        path: str | None,
        speed: dict,
        frame: int | None = None,
    ) -> None:
        self.image, self.path, self.speed, self.categories, self.frame = image, path, speed, categories, frame
        self.detections = detections
        self.boxes = detections.boxes.detach().float().cpu()
        self.scores = detections.scores.detach().cpu()
        self.labels = detections.labels.detach().cpu()
        self.compact_masks = detections.masks
        self.panoptic = getattr(detections, "panoptic", None)
        self.names = dict(enumerate(categories.thing_names))
        self._masks: Tensor | None = None
        self.track_ids: Tensor | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return (int(self.image.shape[-2]), int(self.image.shape[-1]))

    @property
    def masks(self) -> Tensor | None:
        if self._masks is None and self.compact_masks is not None:
            self._masks = self.compact_masks.to_tensor().cpu()
        return self._masks

    def __len__(self) -> int:
        return len(self.scores)

    def __getitem__(self, idx) -> Result:
        if isinstance(idx, (int, slice)):
            idx = torch.arange(len(self))[idx].reshape(-1)
        out = Result(self.image, self.detections[idx], self.categories, self.path, self.speed, self.frame)
        out.track_ids = self.track_ids[idx] if self.track_ids is not None else None
        return out

    def __repr__(self) -> str:
        where = (f" {self.path}" if self.path else "") + (f" frame {self.frame}" if self.frame is not None else "")
        return f"Result({len(self)} instances, {self.image_size[1]}x{self.image_size[0]}{where})"

    def render(self, style=None):
        """The drawing as a PIL image: masks, boxes and "name score" labels (tracked: "#id name score" in the
        track's colour); panoptic models draw every segment. ``style``: a :class:`~blendseg.vis.DrawStyle`
        (labels, scores, line width, boxes)."""
        from ..vis import DrawStyle, render_detections, render_panoptic

        c = self.categories
        if self.panoptic is not None:
            return render_panoptic(self.image, self.panoptic, c.thing_names, c.stuff_names)
        style = style or DrawStyle()
        return render_detections(self.image, self.detections, c.thing_names, float("-inf"), self.track_ids, style)

    def plot(self, style=None) -> np.ndarray:
        """(H, W, 3) uint8 RGB drawing (:meth:`render` as an array)."""
        return np.asarray(self.render(style))

    def save(self, path: str | Path, style=None) -> Path:
        """Write the drawing to an image file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.render(style).save(path)
        return path

    def to_coco(self, image_id: int) -> list[dict]:
        """COCO result records (``image_id``, dataset ``category_id``, ``bbox`` xywh, ``score``, ``segmentation`` as
        compressed RLE), one instance's pixels at a time."""
        from ..evaluation.coco import detections_to_coco

        return detections_to_coco(image_id, self.detections, self.categories.thing_ids)

    def to_dict(self) -> dict:
        """Plain record: path, image size and per instance box (xyxy), score, label, class name and RLE mask."""
        from ..ops.rle import encode

        instances = []
        for i in range(len(self)):
            rec = {
                "box": [round(float(v), 2) for v in self.boxes[i].tolist()],
                "score": round(float(self.scores[i]), 4),
                "label": int(self.labels[i]),
                "class": self.names.get(int(self.labels[i]), str(int(self.labels[i]))),
            }
            if self.compact_masks is not None:
                rec["segmentation"] = encode(self.compact_masks[i].cpu().numpy())
            if self.track_ids is not None:
                rec["track_id"] = int(self.track_ids[i])
            instances.append(rec)
        rec = {"path": self.path, "image_size": list(self.image_size), "instances": instances}
        return rec if self.frame is None else {**rec, "frame": self.frame}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def to_supervision(self):
        """A ``supervision.Detections`` (xyxy, mask, confidence, class_id, tracker_id after
        :meth:`~blendseg.api.Model.track`, class names in ``data``)."""
        try:
            import supervision as sv
        except ImportError:
            raise MissingExtra("Result.to_supervision needs supervision: pip install supervision") from None
        masks = self.masks.numpy() if self.masks is not None else None
        return sv.Detections(
            xyxy=self.boxes.numpy(),
            mask=masks,
            confidence=self.scores.numpy(),
            class_id=self.labels.numpy(),
            tracker_id=self.track_ids.numpy() if self.track_ids is not None else None,
            data={"class_name": np.array([self.names.get(int(c), str(int(c))) for c in self.labels])},
        )
