"""PQ as panopticapi's pq_compute defines it, on hand-built cases with the values worked out by hand, and the
file-based command (``blendseg eval-panoptic``)."""

import json

import numpy as np
import pytest
from PIL import Image

from blendseg.cli import main
from blendseg.data.panoptic import id2rgb
from blendseg.errors import DataError
from blendseg.evaluation.panoptic import PQStat, pq_image, summarize

CATS = {1: {"id": 1, "name": "cat", "isthing": 1}, 2: {"id": 2, "name": "dog", "isthing": 1},
        9: {"id": 9, "name": "sky", "isthing": 0}}  # fmt: skip


def _seg(i, cat, area=None, crowd=0):
    return {"id": i, "category_id": cat, "area": area, "iscrowd": crowd}


def _gt(ids, segs):
    """Ground-truth segments with their areas counted from the map (as the JSON would say)."""
    return [{**s, "area": int((ids == s["id"]).sum())} for s in segs]


def test_perfect_prediction_is_100():
    ids = np.zeros((4, 6), np.uint32)
    ids[:2] = 5
    ids[2:, :3] = 7
    gt = _gt(ids, [_seg(5, 9), _seg(7, 1)])
    stat = pq_image(ids, gt, ids * 3, [{"id": 15, "category_id": 9}, {"id": 21, "category_id": 1}], CATS)
    m = summarize(stat, CATS)
    assert m["PQ"] == m["SQ"] == m["RQ"] == 100.0 and m["n"] == 2 and m["n_th"] == 1 and m["n_st"] == 1
    assert m["per_class"]["cat"] == {"PQ": 100.0, "SQ": 100.0, "RQ": 100.0}


def test_iou_must_exceed_half_and_unmatched_count_as_fp_and_fn():
    gt_ids = np.zeros((1, 10), np.uint32)
    gt_ids[0, :4] = 1  # cat, 4 px
    pred_ids = np.zeros((1, 10), np.uint32)
    pred_ids[0, 2:6] = 1  # cat, 4 px: IoU 2 / 6 -> no match
    stat = pq_image(gt_ids, _gt(gt_ids, [_seg(1, 1)]), pred_ids, [{"id": 1, "category_id": 1}], CATS)
    assert (stat.tp[1], stat.fp[1], stat.fn[1]) == (0, 1, 1)
    pred_ids[0, :] = 0
    pred_ids[0, 1:4] = 1  # 3 px inside: IoU 3 / 4 -> match
    stat = pq_image(gt_ids, _gt(gt_ids, [_seg(1, 1)]), pred_ids, [{"id": 1, "category_id": 1}], CATS)
    assert (stat.tp[1], stat.fp[1], stat.fn[1]) == (1, 0, 0) and stat.iou[1] == pytest.approx(0.75)
    pred_ids[0, 1:4] = 0
    pred_ids[0, 2:4] = 1  # IoU exactly 2 / 4 = 0.5: not > 0.5
    stat = pq_image(gt_ids, _gt(gt_ids, [_seg(1, 1)]), pred_ids, [{"id": 1, "category_id": 1}], CATS)
    assert stat.tp[1] == 0


def test_void_pixels_leave_the_union_and_a_mostly_void_prediction_is_no_fp():
    gt_ids = np.zeros((1, 10), np.uint32)
    gt_ids[0, :4] = 1  # cat on 0..3, void on 4..9
    pred_ids = np.zeros((1, 10), np.uint32)
    pred_ids[0, :8] = 1  # 4 px on the cat + 4 px on void: IoU = 4 / (8 + 4 - 4 - 4) = 1
    pred_ids[0, 8:] = 2  # a dog entirely on void: ignored
    stat = pq_image(
        gt_ids, _gt(gt_ids, [_seg(1, 1)]), pred_ids, [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}], CATS
    )  # noqa: E501
    assert stat.iou[1] == pytest.approx(1.0) and stat.tp[1] == 1 and stat.fp[2] == 0


def test_crowd_never_matches_and_absorbs_predictions_of_its_class():
    gt_ids = np.zeros((1, 12), np.uint32)
    gt_ids[0, :6] = 3  # a crowd of cats
    gt_ids[0, 6:] = 4  # a sky
    gt = _gt(gt_ids, [_seg(3, 1, crowd=1), _seg(4, 9)])
    pred_ids = np.zeros((1, 12), np.uint32)
    pred_ids[0, :4] = 1  # cat on the crowd: not matched, not a false positive
    pred_ids[0, 4:6] = 2  # dog on the cat crowd: a false positive (other class)
    pred_ids[0, 6:] = 5  # sky
    pred = [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}, {"id": 5, "category_id": 9}]
    stat = pq_image(gt_ids, gt, pred_ids, pred, CATS)
    assert (stat.tp[1], stat.fp[1], stat.fn[1]) == (0, 0, 0)  # the crowd is no false negative either
    assert stat.fp[2] == 1 and stat.tp[9] == 1
    m = summarize(stat, CATS)
    # dog: PQ 0 (1 FP); sky: PQ 1; cat: no TP / FP / FN -> not counted
    assert m["n"] == 2 and m["PQ"] == pytest.approx(50.0) and m["PQ_th"] == 0.0 and m["PQ_st"] == 100.0


def test_hand_computed_pq_sq_rq_over_two_images():
    stat = PQStat()
    stat.tp[1], stat.iou[1], stat.fp[1], stat.fn[1] = 2, 1.5, 1, 1  # PQ 1.5/3, SQ 0.75, RQ 2/3
    stat.tp[9], stat.iou[9], stat.fn[9] = 1, 0.9, 1  # PQ 0.9/1.5, SQ 0.9, RQ 1/1.5
    m = summarize(stat + PQStat(), CATS)
    assert m["PQ_th"] == pytest.approx(50.0) and m["SQ_th"] == pytest.approx(75.0)
    assert m["RQ_th"] == pytest.approx(200 / 3) and m["PQ_st"] == pytest.approx(60.0)
    assert m["PQ"] == pytest.approx(55.0) and m["SQ"] == pytest.approx(82.5)
    assert set(m) >= {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st", "per_class"}


def test_inconsistent_predictions_are_errors_naming_the_image():
    ids = np.ones((2, 2), np.uint32)
    with pytest.raises(DataError, match="in the PNG but not in segments_info"):
        pq_image(ids, [], ids * 2, [], CATS, "x.png")
    with pytest.raises(DataError, match="not in the PNG"):
        pq_image(ids, [], ids, [{"id": 1, "category_id": 1}, {"id": 3, "category_id": 1}], CATS, "x.png")
    with pytest.raises(DataError, match="unknown category_id 7"):
        pq_image(ids, [], ids, [{"id": 1, "category_id": 7}], CATS, "x.png")


def test_eval_panoptic_command_on_files(tmp_path, capsys):
    gt_ids = np.zeros((4, 4), np.uint32)
    gt_ids[:2] = 300  # sky, id > 255: exercises the G channel
    gt_ids[2:, :2] = 7  # cat
    pred_ids = gt_ids.copy()
    pred_ids[2:, 2:] = 8  # an extra dog on void: ignored
    for d, ids in (("gt", gt_ids), ("pred", pred_ids)):
        (tmp_path / d).mkdir()
        Image.fromarray(id2rgb(ids)).save(tmp_path / d / "a.png")
    images = [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}]
    gt = {"images": images, "categories": list(CATS.values()), "annotations": [
        {"image_id": 1, "file_name": "a.png", "segments_info": _gt(gt_ids, [_seg(300, 9), _seg(7, 1)])}]}  # fmt: skip
    pred = {"annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": [
        {"id": 300, "category_id": 9}, {"id": 7, "category_id": 1}, {"id": 8, "category_id": 2}]}]}  # fmt: skip
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    out = tmp_path / "metrics.json"
    args = [str(tmp_path / n) for n in ("gt.json", "gt", "pred.json", "pred")]
    assert main(["eval-panoptic", *args, "--out", str(out)]) == 0
    m = json.loads(out.read_text())["panoptic"]
    assert m["PQ"] == 100.0 and m["n"] == 2 and "| Things |" in capsys.readouterr().out
    pred["annotations"] = []
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    assert main(["eval-panoptic", *args]) == 1  # a ground-truth image without prediction: error, no traceback
