"""Tracking metrics by TrackEval on hand-made tracks whose HOTA / IDF1 / MOTA follow from their definitions, the
temporal-stability score on masks whose IoUs are known, and the MOTS output of tracked results."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from blendseg.data.mots import mots_object, read_mots
from blendseg.evaluation.tracking import evaluate_mots, sequence_data, temporal_stability

pytest.importorskip("trackeval", reason="the tracking metrics are TrackEval's (blendseg[track])")

H, W = 40, 60


def _rect(y: int, x: int, h: int = 10, w: int = 12) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y : y + h, x : x + w] = True
    return m


def _two_objects(frames: int = 10) -> list:
    """Objects 1001 (class 1) and 1002 (class 1) side by side, still, for ``frames`` frames."""
    return [mots_object(t, i, 1, _rect(5, 5 + 25 * (i - 1001))) for t in range(1, frames + 1) for i in (1001, 1002)]


def test_perfect_tracks_score_100():
    gt = _two_objects()
    row = evaluate_mots({"s": (gt, gt)})["all"]
    assert row["HOTA"] == row["IDF1"] == row["MOTA"] == 100.0 and row["IDSW"] == 0 and row["MT"] == 2


def test_two_ids_swapped_halfway_score_as_their_definitions_say():
    """Ids exchanged after frame 5 of 10, masks exact: IDF1 = 2 IDTP / (2 IDTP + IDFN + IDFP) = 20 / 40; MOTA =
    1 - IDSW / GT = 1 - 2 / 20; every true positive's association score is TPA / (TPA + FNA + FPA) = 5 / 15, so HOTA =
    sqrt(DetA x AssA) = sqrt(1 / 3) at every threshold."""
    gt = _two_objects()
    swapped = [mots_object(o.frame, (o.track_id if o.frame <= 5 else 2003 - o.track_id), 1, o.mask()) for o in gt]
    row = evaluate_mots({"s": (gt, swapped)})["all"]
    assert row["IDF1"] == 50.0 and row["MOTA"] == 90.0 and row["IDSW"] == 2
    assert row["DetA"] == 100.0 and row["AssA"] == pytest.approx(100 / 3, abs=0.01)
    assert row["HOTA"] == pytest.approx(100 * math.sqrt(1 / 3), abs=0.01)


def test_classes_are_scored_apart_and_a_wrong_class_is_a_miss():
    gt = _two_objects()
    pred = [mots_object(o.frame, o.track_id, 2 if o.track_id == 1002 else 1, o.mask()) for o in gt]
    gt = [mots_object(o.frame, o.track_id, 2 if o.track_id == 1002 else 1, o.mask()) for o in gt]
    out = evaluate_mots({"s": (gt, pred)})
    assert set(out["classes"]) == {1, 2} and out["class_averaged"]["HOTA"] == 100.0
    wrong = [mots_object(o.frame, o.track_id, 1, o.mask()) for o in gt]  # class 2's object predicted as class 1
    out = evaluate_mots({"s": (gt, wrong)})
    assert out["classes"][2]["DetA"] == 0.0 and out["classes"][1]["MOTA"] == 0.0  # one FP a frame against one TP


def test_two_objects_of_one_id_in_a_frame_are_an_error():
    gt = _two_objects(2)
    twice = [mots_object(o.frame, 7, 1, o.mask()) for o in gt]
    from pycocotools import mask as mask_utils

    with pytest.raises(ValueError, match="frame 1: two objects share an id"):
        sequence_data(mask_utils, gt, twice, 1, 2)


def test_stability_of_still_and_moving_objects():
    """A still object whose prediction alternates between two masks of IoU 10/12 scores that on every pair; one
    that moves while its prediction stands still scores |1 - true IoU|."""
    still = [mots_object(t, 1001, 1, _rect(5, 5)) for t in range(1, 7)]
    flicker = [mots_object(t, 9, 1, _rect(5, 5, w=12 if t % 2 else 10)) for t in range(1, 7)]
    s = temporal_stability({"a": (still, flicker)})
    assert s.still_pairs == 5 and s.still == pytest.approx(10 / 12, abs=1e-4) and s.moving_pairs == 0
    moving = [mots_object(t, 1001, 1, _rect(5, 5 + t)) for t in range(1, 4)]  # 1 px a frame: IoU 11/13
    frozen = [mots_object(t, 9, 1, _rect(5, 6)) for t in range(1, 4)]
    s = temporal_stability({"b": (moving, frozen)})
    assert s.moving_pairs == 2 and s.change_error == pytest.approx(1 - 11 / 13, abs=1e-4)
    assert math.isnan(s.still)


def test_mots_output_of_tracked_results_is_disjoint_and_reads_back(tmp_path):
    """Overlapping tracked masks: the higher score keeps the shared pixels; an untracked detection (-1) is left
    out; the file reads back as written, classes as the dataset's category ids."""
    from blendseg.inference.result import Categories, Result
    from blendseg.modeling.core.fcos_inference import Detections
    from blendseg.predict import MotsWriter
    from blendseg.structures import DenseMasks

    masks = torch.from_numpy(np.stack([_rect(5, 5), _rect(8, 10), _rect(25, 40)]))
    n = len(masks)
    zeros = torch.zeros(n, dtype=torch.int64)
    boxes = torch.tensor([[5.0, 5, 17, 15], [10, 8, 22, 18], [40, 25, 52, 35]])
    scores, labels = torch.tensor([0.6, 0.9, 0.3]), torch.tensor([0, 1, 0])
    dets = Detections(boxes, scores, labels, torch.zeros(n, 2), zeros, zeros, masks=DenseMasks(masks))
    r = Result(torch.zeros(3, H, W, dtype=torch.uint8), dets, Categories(["a", "b"], [3, 7]), None, {})
    r.track_ids = torch.tensor([4, 2, -1])
    writer = MotsWriter(tmp_path / "seq.txt", [3, 7])
    written = writer.write(r)
    writer.close()
    back = read_mots(tmp_path / "seq.txt")
    assert (
        [(o.frame, o.track_id, o.class_id) for o in back]
        == [(1, 2, 7), (1, 4, 3)]
        == [(o.frame, o.track_id, o.class_id) for o in written]
    )
    low, high = back[1].mask(), back[0].mask()
    assert not (low & high).any() and np.array_equal(high, _rect(8, 10))
    assert np.array_equal(low, _rect(5, 5) & ~_rect(8, 10))
