"""What the demo, ``blendseg predict`` and ``blendseg track`` write: drawings of a dataset split beside its ground
truth, the prediction files (drawings, streamed JSON, COCO panoptic, pre-labels for annotation tools) of any source,
and tracks as MOTS files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .data.coco import CocoInstances
from .data.mots import MotsObject, mots_line, mots_object
from .data.yolo import coco_to_yolo_lines, mask_outline
from .inference.predictor import Predictor
from .inference.result import Categories, Result
from .modeling.core.fcos_inference import Detections
from .structures import to_device
from .vis import DrawStyle, draw_detections, save_image


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
    class and RLE mask), for panoptic models the COCO panoptic format (``panoptic/<name>.png`` +
    ``panoptic.json``), and pre-labels an annotation tool imports (:class:`PreLabels`: ``save_coco``, a COCO
    dataset; ``save_txt``, YOLO labels). ``sequence``: images are the frames of one video (``blendseg track`` on a
    folder of frames), drawn into ``<sequence>_pred.mp4``; ``json_name``: the JSON file's name (without .json);
    ``style``: how drawings look (:class:`~blendseg.vis.DrawStyle`)."""

    def __init__(
        self,
        out_dir: str | Path,
        categories: Categories,
        draw: bool = True,
        save_json: bool = True,
        save_panoptic: bool = False,
        save_coco: bool = False,
        save_txt: bool = False,
        sequence: str | None = None,
        json_name: str = "predictions",
        style: DrawStyle | None = None,
    ) -> None:
        self.out_dir, self.categories, self.sequence, self.style = Path(out_dir), categories, sequence, style
        self.draw, self.save_panoptic = draw, save_panoptic
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prelabels = PreLabels(self.out_dir, categories, save_coco, save_txt) if save_coco or save_txt else None
        self.json_path = self.out_dir / f"{json_name}.json"
        self.json = open(self.json_path, "w") if save_json else None  # noqa: SIM115
        self.count, self.pan_images, self.pan_annotations = 0, [], []
        self.video, self.video_path = None, None

    def write(self, result: Result, fps: float | None = None) -> None:
        stem = Path(result.path).stem if result.path else f"image{self.count:06d}"
        if result.frame is not None:
            self._write_frame(result, stem, result.path, fps or 25.0)
            stem = f"{stem}_{result.frame:06d}"
        elif self.sequence is not None:
            self._write_frame(result, self.sequence, self.sequence, fps or 25.0)
        elif self.draw:
            result.save(self.out_dir / f"{stem}_pred.png", self.style)
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
        if self.prelabels is not None:
            self.prelabels.add(result, stem)
        self.count += 1

    def _write_frame(self, result: Result, stem: str, video: str | None, fps: float) -> None:
        if not self.draw:
            return
        from .inference.sources import require_cv2

        cv2 = require_cv2()
        if self.video_path != video:
            self._close_video()
            h, w = result.image_size
            path = self.out_dir / f"{stem}_pred.mp4"
            self.video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            self.video_path = video
        self.video.write(np.ascontiguousarray(result.plot(self.style)[..., ::-1]))

    def _close_video(self) -> None:
        if self.video is not None:
            self.video.release()
            self.video, self.video_path = None, None

    def close(self) -> list[Path]:
        """Finish the files; returns the JSON files (and pre-label folders) written."""
        self._close_video()
        written = self.prelabels.close() if self.prelabels is not None else []
        if self.json is not None:
            self.json.write("[]" if self.count == 0 else "\n]\n")
            self.json.close()
            written.append(self.json_path)
        if self.pan_images:
            pan = {"images": self.pan_images, "annotations": self.pan_annotations}
            pan["categories"] = self.categories.coco_panoptic()
            (self.out_dir / "panoptic.json").write_text(json.dumps(pan))
            written.append(self.out_dir / "panoptic.json")
        return written


class PreLabels:
    """Predictions as labels an annotation tool imports, to be corrected and trained on again:

    - ``save_coco``: a COCO dataset in CVAT's "COCO 1.0" layout, ``coco/annotations/instances_default.json``
      (polygons: the outer outlines of each mask along its pixel edges, bbox and area from the mask, the score
      kept as an extra field) and ``coco/images/`` (each source image copied, or a frame saved as PNG). CVAT
      imports the JSON into a task holding the same images (matched by file name), Roboflow the folder, Label
      Studio through its COCO converter; ``blendseg data check OUT/coco`` reads it as training would.
    - ``save_txt``: ``labels/<name>.txt`` as ultralytics writes them: ``class x1 y1 x2 y2 ...`` normalised to the
      image (several outlines of one instance joined into one polygon; a box model's ``class cx cy w h``).
    """

    def __init__(self, out_dir: Path, categories: Categories, coco: bool, txt: bool) -> None:
        self.out_dir, self.categories, self.coco, self.txt = out_dir, categories, coco, txt
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.names: set[str] = set()

    def add(self, result: Result, stem: str) -> None:
        h, w = result.image_size
        name = Path(result.path).name if result.path and result.frame is None else f"{stem}.png"
        while name in self.names:  # two sources of one name
            name = f"{Path(name).stem}_{len(self.images)}{Path(name).suffix}"
        self.names.add(name)
        image = {"id": len(self.images) + 1, "file_name": name, "width": w, "height": h}
        anns = instance_annotations(result, image["id"], self.categories.thing_ids, len(self.annotations) + 1)
        if self.coco:
            target = self.out_dir / "coco" / "images" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if result.path and result.frame is None and Path(result.path).is_file():
                shutil.copyfile(result.path, target)
            else:
                save_image(result.image, target)
            self.images.append(image)
            self.annotations += anns
        if self.txt:
            index = {c: i for i, c in enumerate(self.categories.thing_ids)}
            lines, _ = coco_to_yolo_lines([a for a in anns if "segmentation" in a], image, index)
            for a in (a for a in anns if "segmentation" not in a):  # a box model: YOLO's box lines
                x, y, bw, bh = a["bbox"]
                lines.append(
                    f"{index[a['category_id']]} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"
                )
            label = self.out_dir / "labels" / f"{Path(name).stem}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(f"{line}\n" for line in lines))

    def close(self) -> list[Path]:
        written = []
        if self.coco:
            named = zip(self.categories.thing_ids, self.categories.thing_names)
            cats = [{"id": i, "name": n, "supercategory": ""} for i, n in named]
            path = self.out_dir / "coco" / "annotations" / "instances_default.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"images": self.images, "annotations": self.annotations, "categories": cats}))
            written.append(path.parent.parent)
        if self.txt:
            written.append(self.out_dir / "labels")
        return written


def instance_annotations(result: Result, image_id: int, cat_ids: list[int], first_id: int = 1) -> list[dict]:
    """COCO annotations of a Result: per instance its mask's outer outlines as polygons, with the bbox and area of
    the mask (instances whose mask is empty are left out), or for a box model its box alone; ``score`` kept."""
    out = []
    masks = result.masks
    for i in range(len(result)):
        ann = {
            "image_id": image_id,
            "category_id": cat_ids[int(result.labels[i])],
            "iscrowd": 0,
            "score": round(float(result.scores[i]), 4),
        }
        if masks is None:
            x0, y0, x1, y1 = (float(v) for v in result.boxes[i])
            ann.update(bbox=[x0, y0, x1 - x0, y1 - y0], area=(x1 - x0) * (y1 - y0))
        else:
            mask = masks[i].numpy()
            rings = mask_outline(mask)
            if not rings:
                continue
            ys, xs = np.nonzero(mask)
            box = [float(xs.min()), float(ys.min()), float(xs.max() + 1 - xs.min()), float(ys.max() + 1 - ys.min())]
            ann.update(segmentation=rings, bbox=box, area=float(mask.sum()))
        out.append({"id": first_id + len(out), **ann})
    return out


def mots_objects(result: Result, frame: int, cat_ids: list[int]) -> list[MotsObject]:
    """A tracked Result's objects for a MOTS file: its detections with a track (id >= 0), class = the dataset's
    category id, the track id as the object id, and masks made disjoint as MOTS requires (where two overlap, the
    higher score keeps the pixel). A box model has no MOTS output."""
    if result.compact_masks is None or result.track_ids is None:
        return []
    tracked = [i for i in np.argsort(result.scores.numpy(), kind="stable") if int(result.track_ids[i]) >= 0]
    owner = np.full(result.image_size, -1, dtype=np.int32)
    for i in tracked:  # ascending score: the higher paints last
        y0, x0, win = result.compact_masks.window(int(i))
        win = win.cpu().numpy()
        owner[y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]][win] = i
    out = []
    for i in tracked:
        mask = owner == i
        if mask.any():
            out.append(mots_object(frame, int(result.track_ids[i]), cat_ids[int(result.labels[i])], mask))
    return out


class MotsWriter:
    """A sequence's tracks as a MOTS txt file (:mod:`~blendseg.data.mots`), written frame by frame as results
    stream in; frames are numbered from 1 in the order written. ``objects`` keeps what was written (RLE text, a few
    hundred bytes an object) when ``keep=True``, for evaluation."""

    def __init__(self, path: str | Path, cat_ids: list[int], keep: bool = False) -> None:
        self.path, self.cat_ids, self.keep = Path(path), cat_ids, keep
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "w")  # noqa: SIM115
        self.frames, self.objects = 0, []

    def write(self, result: Result) -> list[MotsObject]:
        self.frames += 1
        objects = sorted(mots_objects(result, self.frames, self.cat_ids), key=lambda o: o.track_id)
        self.file.write("".join(mots_line(o) for o in objects))
        self.file.flush()
        if self.keep:
            self.objects += objects
        return objects

    def close(self) -> Path:
        self.file.close()
        return self.path
