"""TIDE's error types and the confusion matrix on hand-built images whose answers are worked out by hand."""

import numpy as np
import pytest

from blendseg.evaluation.errors import average_precision, confusion_matrix, tide

A, B, FAR = [0, 0, 10, 10], [50, 50, 10, 10], [80, 80, 10, 10]  # xywh


def _gt(*anns, crowd=()):
    annotations = [{"id": i + 1, "image_id": 1, "category_id": c, "bbox": b, "iscrowd": 0, "area": b[2] * b[3]}
                   for i, (c, b) in enumerate(anns)]  # fmt: skip
    annotations += [{"id": 100 + i, "image_id": 1, "category_id": c, "bbox": b, "iscrowd": 1, "area": b[2] * b[3]}
                    for i, (c, b) in enumerate(crowd)]  # fmt: skip
    return {"images": [{"id": 1, "height": 100, "width": 100}], "annotations": annotations,
            "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}  # fmt: skip


def _dt(*preds):
    return [{"image_id": 1, "category_id": c, "bbox": b, "score": s} for c, b, s in preds]


def test_ap_is_tides_101_point_envelope():
    assert average_precision([(0.9, True), (0.8, False), (0.7, True)], 2) == pytest.approx((51 + 50 * 2 / 3) / 1.01)
    assert average_precision([(0.9, True)], 2) == pytest.approx(51 / 1.01)  # recall stops at 0.5
    assert average_precision([(0.9, False)], 0) == 0.0


def test_a_perfect_prediction_has_no_errors():
    t = tide(_gt((1, A)), _dt((1, A, 0.9)))
    assert t.ap50 == 100 and sum(t.counts.values()) == 0 and t.per_image == {}


@pytest.mark.parametrize(
    ("gt", "dt", "kind", "base", "gain"),
    [
        # another class on the box: 0 for class 1 (missed) and 0 for class 2 (a false positive); fixed: 100
        ((((1, A),)), ((2, A, 0.9),), "Cls", 0.0, 100.0),
        # its class, IoU 0.4: in [0.1, 0.5]
        (((1, A),), ((1, [0, 0, 10, 4], 0.9),), "Loc", 0.0, 100.0),
        # another class at IoU 0.25 beside a true positive: class 2 scores 0, mean 50; removed: 100
        (((1, A),), ((1, A, 0.9), (2, [5, 0, 10, 10], 0.8)), "Both", 50.0, 50.0),
        # a second prediction on a matched box, ranked between the two true positives
        (((1, A), (1, B)), ((1, A, 0.9), (1, A, 0.8), (1, B, 0.7)), "Dupe", (51 + 50 * 2 / 3) / 1.01,
         100 - (51 + 50 * 2 / 3) / 1.01),
        # far from everything, above the true positive: precision 1/2 at recall 1
        (((1, A),), ((1, FAR, 0.95), (1, A, 0.9)), "Bkg", 50.0, 50.0),
        # the second ground truth never found: recall stops at 0.5
        (((1, A), (1, B)), ((1, A, 0.9),), "Miss", 51 / 1.01, 100 - 51 / 1.01),
    ],
)  # fmt: skip
def test_each_error_type_and_the_ap_its_fix_gains(gt, dt, kind, base, gain):
    t = tide(_gt(*gt), _dt(*dt))
    assert t.counts[kind] == 1 and sum(t.counts.values()) == 1
    assert t.ap50 == pytest.approx(base)
    assert t.dap[kind] == pytest.approx(gain)
    assert all(v == 0 for k, v in t.dap.items() if k != kind)
    assert [e["type"] for e in t.per_image[1]] == [kind]


def test_only_the_best_error_on_a_free_ground_truth_is_fixed():
    """Two localisation errors on one ground truth: fixing makes the higher a true positive, removes the lower."""
    t = tide(_gt((1, A)), _dt((1, [0, 0, 10, 4], 0.9), (1, [0, 0, 10, 3], 0.8)))
    assert t.counts["Loc"] == 2 and t.counts["Miss"] == 0  # the ground truth is "usable": not a miss
    assert t.dap["Loc"] == pytest.approx(100.0)


def test_crowd_regions_absorb_predictions_and_specials():
    t = tide(_gt((1, A), crowd=[(1, [40, 40, 40, 40])]), _dt((1, A, 0.5), (1, [50, 50, 10, 10], 0.9)))
    assert t.ap50 == 100.0  # the prediction inside the crowd region is not a false positive
    # a background false positive above the one true positive, B missed: precision 1/2 up to recall 1/2
    t = tide(_gt((1, A), (1, B)), _dt((1, FAR, 0.95), (1, A, 0.9)))
    assert t.ap50 == pytest.approx(25.5 / 1.01)
    assert t.special["FalsePos"] == pytest.approx(51 / 1.01 - 25.5 / 1.01)  # precision 1 up to recall 1/2
    assert t.special["FalseNeg"] == pytest.approx(50 - 25.5 / 1.01)  # precision 1/2 at every recall


def test_segm_uses_the_masks_and_the_mask_score():
    from blendseg.ops.rle import encode

    m = np.zeros((100, 100), bool)
    m[:10, :10] = True
    gt = _gt((1, A))
    gt["annotations"][0]["segmentation"] = encode(m)
    off = np.zeros_like(m)
    off[:10, :3] = True  # IoU 0.3 with the mask, the box is A itself
    dt = [{"image_id": 1, "category_id": 1, "bbox": A, "score": 0.9, "mask_score": 0.2, "segmentation": encode(off)}]
    assert tide(gt, dt, "bbox").ap50 == 100 and tide(gt, dt, "segm").counts["Loc"] == 1


def test_confusion_matrix_counts_confusions_misses_duplicates_and_background():
    gt = _gt((1, A), (2, B), (1, [20, 20, 10, 10]))  # the third is missed
    dt = _dt((2, A, 0.9),  # confused: true 1, predicted 2
             (2, B, 0.8),  # correct
             (1, [50, 50, 10, 9], 0.7),  # a duplicate on B: its ground truth is taken -> background
             (1, FAR, 0.6),  # background
             (1, [0, 0, 10, 10], 0.1))  # below conf: not counted  # fmt: skip
    m = confusion_matrix(gt, dt, [1, 2], conf=0.25)
    assert m.tolist() == [[0, 0, 2], [1, 1, 0], [1, 0, 0]]  # rows predicted (1, 2, bg), columns true (1, 2, bg)


def _random_case(seed):
    """15 images of up to 4 boxes of 3 classes, each with 0-2 noisy predictions (30 % another class), plus
    background predictions."""
    rng = np.random.default_rng(seed)
    images, anns, dts = [], [], []
    for iid in range(1, 16):
        images.append({"id": iid, "height": 200, "width": 200})
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(10, 50, 2)
            c = int(rng.integers(1, 4))
            anns.append({"id": len(anns) + 1, "image_id": iid, "category_id": c, "bbox": [x, y, w, h], "iscrowd": 0})
            for _ in range(rng.integers(0, 3)):
                j = rng.normal(0, 6, 4)
                cc = c if rng.random() < 0.7 else int(rng.integers(1, 4))
                box = [x + j[0], y + j[1], max(2, w + j[2]), max(2, h + j[3])]
                dts.append({"image_id": iid, "category_id": cc, "bbox": box, "score": float(rng.random())})
        for _ in range(rng.integers(0, 2)):
            x, y = rng.uniform(0, 150, 2)
            dts.append({"image_id": iid, "category_id": int(rng.integers(1, 4)), "bbox": [x, y, 20, 20],
                        "score": float(rng.random())})  # fmt: skip
    return {"images": images, "annotations": anns}, dts


# tidecv 1.0.1 (TIDE().evaluate(gt, preds, mode=TIDE.BOX); get_all_errors()) on the same two cases
TIDECV = {
    0: {"AP50": 12.111486, "dAP": {"Cls": 4.361876, "Loc": 23.205713, "Both": 0.134189, "Dupe": 0.373191,
        "Bkg": 1.938919, "Miss": 4.697832}, "special": {"FalsePos": 11.320857, "FalseNeg": 21.741075},
        "counts": {"Cls": 5, "Loc": 11, "Both": 5, "Dupe": 2, "Bkg": 13, "Miss": 13}},
    3: {"AP50": 17.79978, "dAP": {"Cls": 9.284928, "Loc": 17.471247, "Both": 1.014887, "Dupe": 0.125727,
        "Bkg": 2.868628, "Miss": 12.39549}, "special": {"FalsePos": 17.183718, "FalseNeg": 33.564356},
        "counts": {"Cls": 5, "Loc": 10, "Both": 8, "Dupe": 2, "Bkg": 10, "Miss": 12}},
}  # fmt: skip


@pytest.mark.parametrize("seed", sorted(TIDECV))
def test_the_breakdown_equals_tidecvs(seed):
    t = tide(*_random_case(seed)).summary()
    want = TIDECV[seed]
    assert t["counts"] == want["counts"]
    assert t["AP50"] == pytest.approx(want["AP50"], abs=1e-5)
    for part in ("dAP", "special"):
        assert t[part] == pytest.approx(want[part], abs=1e-5), part
