"""COCO evaluation of boxes (and masks, once a method produces them) with faster-coco-eval or pycocotools.

Results are converted to COCO json records per image while streaming (masks to RLE right away), category ids
mapped back to the dataset's; the 12 standard numbers are printed and returned in percent.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

from ..dist import gather_objects, is_main_process
from ..modeling.core.fcos_inference import Detections
from ..ops.rle import encode

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")
TABLE_ROWS = (
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.75      | area=   all | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Precision  (AP) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets= 10 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= small | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ]",
    "Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ]",
)


def _backend():
    try:
        from faster_coco_eval import COCO, COCOeval_faster

        return "faster-coco-eval", COCO, COCOeval_faster
    except ImportError:  # pragma: no cover - only without faster-coco-eval
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return "pycocotools", COCO, COCOeval


def detections_to_coco(image_id: int, dets: Detections, contiguous_to_cat_id: list[int]) -> list[dict]:
    """COCO result records of one image; boxes xyxy -> xywh, labels -> dataset category ids, masks -> RLE."""
    boxes = dets.boxes.detach().cpu().numpy().astype(np.float64)
    scores = dets.scores.detach().cpu().numpy().tolist()
    labels = dets.labels.detach().cpu().numpy().tolist()
    masks = dets.masks  # compact: one instance at full size at a time (memory does not grow with the picture)
    mask_scores = getattr(dets, "mask_scores", None)  # YOLACT++: mask AP ranks by score x predicted mask IoU
    mask_scores = mask_scores.detach().cpu().numpy().tolist() if mask_scores is not None else None
    out = []
    for i in range(len(scores)):
        x0, y0, x1, y1 = boxes[i].tolist()
        rec = {
            "image_id": int(image_id),
            "category_id": int(contiguous_to_cat_id[labels[i]]),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": float(scores[i]),
        }
        if masks is not None:
            rec["segmentation"] = encode(masks[i].cpu().numpy())
        if mask_scores is not None:
            rec["mask_score"] = float(mask_scores[i])
        out.append(rec)
    return out


class COCOEvaluator:
    """detectron2-style evaluator: ``reset()``, ``process(image_ids, detections)``, ``evaluate()``.

    Args:
        coco_gt: the ground-truth COCO dict (crowd annotations included).
        contiguous_to_cat_id: label -> category id.
        iou_types: ("bbox",) or ("bbox", "segm").
    """

    def __init__(self, coco_gt: dict, contiguous_to_cat_id: list[int], class_names: list[str], iou_types=("bbox",)):
        self.coco_gt = coco_gt
        self.contiguous_to_cat_id = list(contiguous_to_cat_id)
        self.class_names = list(class_names)
        self.iou_types = tuple(iou_types)
        self.reset()

    def reset(self) -> None:
        self.results: list[dict] = []
        self.image_ids: list[int] = []
        # after evaluate(), on the main process: every process's result records and COCOeval's accumulated arrays
        # per IoU type (precision, scores, rec_thrs), what evaluation/report.py analyses
        self.gathered: list[dict] = []
        self.arrays: dict[str, dict[str, np.ndarray]] = {}

    def process(self, image_ids: list[int], detections: list[Detections]) -> None:
        for iid, dets in zip(image_ids, detections):
            self.image_ids.append(int(iid))
            self.results.extend(detections_to_coco(iid, dets, self.contiguous_to_cat_id))

    def evaluate(self, verbose: bool = True) -> dict[str, dict[str, float]]:
        """Gather to the main process and run COCO eval there (others return {})."""
        results = [r for part in gather_objects(self.results) for r in part]
        image_ids = sorted({i for part in gather_objects(self.image_ids) for i in part})
        if not is_main_process():
            return {}
        self.gathered = results
        name, COCO, COCOeval = _backend()
        gt = _load_gt(COCO, self.coco_gt)
        metrics: dict[str, dict[str, float]] = {}
        for iou_type in self.iou_types:
            if not results:
                metrics[iou_type] = {k: 0.0 for k in STAT_NAMES}
                if verbose:
                    print(f"[{iou_type}] no detections: AP = 0")
                continue
            recs = copy.deepcopy(results)
            if iou_type == "segm":
                for r in recs:
                    r["score"] = r.pop("mask_score", r["score"])
            dt = gt.loadRes(recs)
            ev = COCOeval(gt, dt, iou_type)
            ev.params.imgIds = image_ids
            with contextlib.redirect_stdout(io.StringIO()):
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            self.arrays[iou_type] = {
                "precision": np.asarray(ev.eval["precision"]),
                "scores": np.asarray(ev.eval["scores"]),
                "rec_thrs": np.asarray(ev.params.recThrs),
            }
            stats = [float(s) * 100 for s in ev.stats[:12]]
            if verbose:
                print(f"COCO {iou_type} ({name}, {len(image_ids)} images):")
                for row, v in zip(TABLE_ROWS, stats):
                    print(f" {row} = {v / 100:.3f}")
            m = {k: stats[i] for i, k in enumerate(STAT_NAMES)}
            m.update(_per_class_ap(ev, self.class_names))
            metrics[iou_type] = m
        return metrics


def _load_gt(COCO, coco_gt: dict):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            return COCO(copy.deepcopy(coco_gt))
        except TypeError:  # pycocotools' COCO takes a path only
            gt = COCO()
            gt.dataset = copy.deepcopy(coco_gt)
            gt.createIndex()
            return gt


def _per_class_ap(ev, class_names: list[str]) -> dict[str, float | None]:
    """AP per class; None for a class without instances in the split (COCOeval's -1)."""
    precision = ev.eval["precision"]  # (iou, recall, class, area, maxdets)
    out = {}
    for k, name in enumerate(class_names[: precision.shape[2]]):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[f"AP-{name}"] = float(np.mean(p) * 100) if p.size else None
    return out
