"""Detections with known answers for evaluation tests: the ground truth itself, optionally moved or shuffled."""

from __future__ import annotations

import numpy as np
import torch

from blendseg.modeling.core.fcos_inference import Detections
from blendseg.ops.rle import decode
from blendseg.structures import DenseMasks


def detections(boxes: list, labels: list, scores: list, masks: np.ndarray) -> Detections:
    n = len(boxes)
    z = torch.zeros(n, dtype=torch.int64)
    return Detections(
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(n, 4), scores=torch.tensor(scores),
        labels=torch.tensor(labels, dtype=torch.int64), locations=torch.zeros(n, 2), levels=z, loc_inds=z,
        masks=DenseMasks(torch.from_numpy(masks).bool()),
    )  # fmt: skip


def ground_truth_as_detections(
    coco: dict, image: dict, cat_ids: list[int], shift: int = 0, seed: int | None = None
) -> Detections:
    """The image's (non-crowd) annotations as detections: boxes xyxy, labels contiguous (their category's index in
    ``cat_ids``), masks decoded (:func:`blendseg.ops.rle.decode`). ``shift`` moves boxes and masks right by that many
    pixels; ``seed`` gives the scores a random order and adds one false positive (for a ranking that is not
    trivial)."""
    h, w = image["height"], image["width"]
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"] and not a.get("iscrowd", 0)]
    boxes = [[a["bbox"][0] + shift, a["bbox"][1], a["bbox"][0] + a["bbox"][2] + shift, a["bbox"][1] + a["bbox"][3]]
             for a in anns]  # fmt: skip
    labels = [cat_ids.index(a["category_id"]) for a in anns]
    masks = np.stack([np.roll(decode(a["segmentation"], h, w), shift, axis=1) for a in anns]) if anns else None
    scores = [1.0 - 0.01 * i for i in range(len(anns))]
    if seed is not None:
        rng = np.random.default_rng(seed)
        scores = rng.uniform(0.1, 1.0, len(anns)).tolist()
        boxes.append([0.0, 0.0, w / 4, h / 4])
        labels.append(int(rng.integers(len(cat_ids))))
        scores.append(float(rng.uniform(0.1, 1.0)))
        fp = np.zeros((1, h, w), np.uint8)
        fp[0, : h // 4, : w // 4] = 1
        masks = fp if masks is None else np.concatenate([masks, fp])
    if masks is None:
        masks = np.zeros((0, h, w), np.uint8)
    return detections(boxes, labels, scores, masks)
