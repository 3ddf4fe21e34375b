"""Known answers of the COCO evaluator (evaluation/coco.py): the ground truth fed back scores AP 100, a shifted box
the AP that the IoU thresholds give (and pycocotools agrees), YOLACT++'s mask scores rank mask AP only, and two
processes gathering over Gloo score what one process does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from blendseg.evaluation.coco import COCOEvaluator
from blendseg.modeling.methods.yolact import YolactDetections
from blendseg.structures import DenseMasks
from tests.known_answers import ground_truth_as_detections

SPARSE_IDS = [3, 10, 42, 57, 90, 91]  # the 6 synthetic classes under sparse, unordered-looking ids


def sparse_coco(data_yaml: Path) -> dict:
    """The synthetic val split with its category ids 1..6 renamed to SPARSE_IDS."""
    coco = json.loads((data_yaml.parent / "val" / "annotations.json").read_text())
    new = {c["id"]: SPARSE_IDS[i] for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
    for c in coco["categories"]:
        c["id"] = new[c["id"]]
    for a in coco["annotations"]:
        a["category_id"] = new[a["category_id"]]
    return coco


def evaluator(coco: dict) -> COCOEvaluator:
    names = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    return COCOEvaluator(coco, SPARSE_IDS, names, ("bbox", "segm"))


def test_the_ground_truth_fed_back_scores_ap_100_with_sparse_category_ids(synth_data):
    coco = sparse_coco(synth_data)
    ev = evaluator(coco)
    for image in coco["images"]:
        ev.process([image["id"]], [ground_truth_as_detections(coco, image, SPARSE_IDS)])
    metrics = ev.evaluate(verbose=False)
    for iou_type in ("bbox", "segm"):
        m = metrics[iou_type]
        assert m["AP"] == pytest.approx(100.0) and m["AP50"] == pytest.approx(100.0), (iou_type, m)
        per_class = {k: v for k, v in m.items() if k.startswith("AP-")}
        assert len(per_class) == 6 and all(v is None or v == pytest.approx(100.0) for v in per_class.values())
    assert {r["category_id"] for r in ev.gathered} <= set(SPARSE_IDS)


def one_box_coco(w: int = 40, h: int = 40) -> dict:
    x, y = 20, 30
    seg = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    return {
        "images": [{"id": 7, "file_name": "a.jpg", "height": 128, "width": 128}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": 42,
                "bbox": [x, y, w, h],
                "area": w * h,
                "segmentation": seg,
                "iscrowd": 0,
            }
        ],  # fmt: skip
        "categories": [{"id": c, "name": f"c{c}"} for c in SPARSE_IDS],
    }


def pycocotools_ap(coco: dict, results: list[dict], iou_type: str) -> float:
    """AP by pycocotools itself (the evaluator runs faster-coco-eval where installed)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(coco))
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(results))), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]) * 100


@pytest.mark.parametrize("shift", [0, 4, 8, 16])
def test_a_shifted_box_scores_the_ap_its_iou_gives(shift):
    """A 40 x 40 box moved ``shift`` px right: IoU (40 - s) / (40 + s); it counts at the thresholds 0.50, 0.55,
    ... 0.95 it reaches, so AP = 10 x that count (one box, precision 1 or 0)."""
    coco = one_box_coco()
    ev = evaluator(coco)
    image = coco["images"][0]
    ev.process([7], [ground_truth_as_detections(coco, image, SPARSE_IDS, shift=shift)])
    metrics = ev.evaluate(verbose=False)
    iou = (40 - shift) / (40 + shift)
    expected = 10.0 * sum(iou >= t - 1e-9 for t in np.linspace(0.5, 0.95, 10))
    assert expected == {0: 100.0, 4: 70.0, 8: 40.0, 16: 0.0}[shift]  # the arithmetic above, written out
    for iou_type in ("bbox", "segm"):
        assert metrics[iou_type]["AP"] == pytest.approx(expected, abs=1e-6), iou_type
        assert metrics[iou_type]["AP"] == pytest.approx(pycocotools_ap(coco, ev.gathered, iou_type), abs=1e-6)


def yolact_detections(mask_scores: list[float] | None) -> YolactDetections:
    """Two detections of class 42 on one_box_coco's image: A on the object (box score 0.6), B far from it
    (box score 0.9); with mask scores A 0.9, B 0.1."""
    masks = np.zeros((2, 128, 128), np.uint8)
    masks[0, 30:70, 20:60] = 1
    masks[1, 90:120, 90:120] = 1
    return YolactDetections(
        boxes=torch.tensor([[20.0, 30, 60, 70], [90, 90, 120, 120]]), scores=torch.tensor([0.6, 0.9]),
        labels=torch.tensor([2, 2]), prior_inds=torch.zeros(2, dtype=torch.int64), coefs=torch.zeros(2, 4),
        masks=DenseMasks(torch.from_numpy(masks).bool()),
        mask_scores=None if mask_scores is None else torch.tensor(mask_scores),
    )  # fmt: skip


def test_yolact_plus_mask_scores_rank_masks_and_leave_boxes_alone():
    """Ranked by box score the false positive B comes first: precision 1/2 at recall 1, AP 50. YOLACT++'s mask
    scores put A first for mask AP (100); box AP stays 50."""
    coco = one_box_coco()
    out = {}
    for name, ms in (("plain", None), ("rescored", [0.9, 0.1])):
        ev = evaluator(coco)
        ev.process([7], [yolact_detections(ms)])
        out[name] = ev.evaluate(verbose=False)
    assert out["plain"]["bbox"]["AP"] == pytest.approx(50.0) and out["plain"]["segm"]["AP"] == pytest.approx(50.0)
    assert out["rescored"]["bbox"]["AP"] == pytest.approx(50.0)
    assert out["rescored"]["segm"]["AP"] == pytest.approx(100.0)


def _two_process_worker(rank: int, store: str, coco: dict, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        ev = evaluator(coco)
        for k, image in enumerate(coco["images"]):
            if k % 2 == rank:  # a distributed sampler's split
                ev.process([image["id"]], [ground_truth_as_detections(coco, image, SPARSE_IDS, shift=3, seed=k)])
        metrics = ev.evaluate(verbose=False)
        if rank == 0:
            Path(out).write_text(json.dumps(metrics))
        else:
            assert metrics == {}
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns processes
def test_two_processes_over_gloo_score_what_one_process_does(synth_data, tmp_path):
    coco = sparse_coco(synth_data)
    ev = evaluator(coco)
    for k, image in enumerate(coco["images"]):
        ev.process([image["id"]], [ground_truth_as_detections(coco, image, SPARSE_IDS, shift=3, seed=k)])
    one = ev.evaluate(verbose=False)
    assert 10 < one["bbox"]["AP"] < 90 and 10 < one["segm"]["AP"] < 90  # not a trivial ranking
    out = tmp_path / "two.json"
    mp.start_processes(_two_process_worker, (str(tmp_path / "store"), coco, str(out)), nprocs=2,
                       start_method="spawn")  # fmt: skip
    two = json.loads(out.read_text())
    for iou_type in ("bbox", "segm"):
        for k, v in one[iou_type].items():
            w = two[iou_type][k]
            assert (v is None and w is None) or math.isclose(v, w, abs_tol=1e-9), (iou_type, k, v, w)
