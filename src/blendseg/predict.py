"""What the demo and ``blendseg predict`` write: drawings of a dataset split beside its ground truth, and the
prediction files (drawings, streamed JSON, COCO panoptic) of any source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .data.coco import CocoInstances
from .inference.predictor import Predictor
from .inference.result import Categories, Result
from .modeling.core.fcos_inference import Detections
from .structures import to_device
from .vis import draw_detections, save_image


def predict_image(model: nn.Module, cfg: TrainConfig, image: torch.Tensor) -> Detections:
    """Detections of every score for one (3, H, W) uint8 RGB image, at its size (test-time resize as the config
    says), on the CPU: the :class:`~blendseg.inference.predictor.Predictor`'s path, where the model is."""
    return to_device(Predictor(model, cfg, Categories([], [])).detect(image)[0], "cpu")


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


class PredictionWriter:
    """What ``blendseg predict`` leaves in its output folder, written as results stream in (nothing accumulates but
    the panoptic JSON's small segment lists): ``<name>_pred.png`` drawings (``<name>_pred.mp4`` for videos, frame
    by frame), ``predictions.json`` (per image its path, size, frame for videos, and instances with box, score,
    class and RLE mask) and, for panoptic models, the COCO panoptic format (``panoptic/<name>.png`` +
    ``panoptic.json``)."""

    def __init__(
        self, out_dir: str | Path, categories: Categories, draw: bool = True, save_json: bool = True,
        save_panoptic: bool = False,
    ) -> None:  # fmt: skip
        self.out_dir, self.categories = Path(out_dir), categories
        self.draw, self.save_panoptic = draw, save_panoptic
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.json = open(self.out_dir / "predictions.json", "w") if save_json else None  # noqa: SIM115
        self.count, self.pan_images, self.pan_annotations = 0, [], []
        self.video, self.video_path = None, None

    def write(self, result: Result, fps: float | None = None) -> None:
        stem = Path(result.path).stem if result.path else f"image{self.count:06d}"
        if result.frame is not None:
            self._write_frame(result, stem, fps or 25.0)
            stem = f"{stem}_{result.frame:06d}"
        elif self.draw:
            result.save(self.out_dir / f"{stem}_pred.png")
        if self.json is not None:
            self.json.write(("[\n" if self.count == 0 else ",\n") + result.to_json())
            self.json.flush()
        if self.save_panoptic and result.panoptic is not None:
            from .data.panoptic import save_panoptic_png
            from .evaluation.panoptic import to_coco_panoptic

            ids, segments = to_coco_panoptic(result.panoptic, self.categories.thing_ids, self.categories.stuff_ids)
            save_panoptic_png(ids, self.out_dir / "panoptic" / f"{stem}.png")
            iid = len(self.pan_images) + 1
            name = Path(result.path).name if result.path else f"{stem}.png"
            self.pan_images.append({"id": iid, "file_name": name, "height": ids.shape[0], "width": ids.shape[1]})
            self.pan_annotations.append({"image_id": iid, "file_name": f"{stem}.png", "segments_info": segments})
        self.count += 1

    def _write_frame(self, result: Result, stem: str, fps: float) -> None:
        if not self.draw:
            return
        from .inference.sources import require_cv2

        cv2 = require_cv2()
        if self.video_path != result.path:
            self._close_video()
            h, w = result.image_size
            path = self.out_dir / f"{stem}_pred.mp4"
            self.video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            self.video_path = result.path
        self.video.write(np.ascontiguousarray(result.plot()[..., ::-1]))

    def _close_video(self) -> None:
        if self.video is not None:
            self.video.release()
            self.video, self.video_path = None, None

    def close(self) -> list[Path]:
        """Finish the files; returns the JSON files written."""
        import json

        self._close_video()
        written = []
        if self.json is not None:
            self.json.write("[]" if self.count == 0 else "\n]\n")
            self.json.close()
            written.append(self.out_dir / "predictions.json")
        if self.pan_images:
            pan = {"images": self.pan_images, "annotations": self.pan_annotations}
            pan["categories"] = self.categories.coco_panoptic()
            (self.out_dir / "panoptic.json").write_text(json.dumps(pan))
            written.append(self.out_dir / "panoptic.json")
        return written
