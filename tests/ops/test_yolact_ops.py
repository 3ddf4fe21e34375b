"""YOLACT ops against naive versions: Fast NMS, crop, priors (official layout), SSD box coding."""

import numpy as np
import torch

from blendseg.ops.anchors import decode_boxes, encode_boxes, make_priors, point_form
from blendseg.ops.masks import crop_masks
from blendseg.ops.nms import fast_nms, pairwise_iou, standard_nms

from ..conftest import reference_dir


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _random_boxes(n, g):
    xy = torch.rand(n, 2, generator=g) * 0.8
    return torch.cat([xy, xy + 0.05 + torch.rand(n, 2, generator=g) * 0.3], 1)


def test_fast_nms_equals_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    boxes, scores = _random_boxes(60, g), torch.rand(3, 60, generator=g)
    for second in (None, 0.3):
        idx, cls, sc = fast_nms(boxes, scores, 0.5, top_k=40, max_det=25, second_threshold=second)
        expected = []
        for c in range(3):
            order = sorted(range(60), key=lambda i: -float(scores[c, i]))[:40]
            for j, pj in enumerate(order):  # suppressed by ANY higher-scoring box, suppressed ones included
                kept = all(_iou(boxes[pi].tolist(), boxes[pj].tolist()) <= 0.5 for pi in order[:j])
                if kept and (second is None or float(scores[c, pj]) > second):
                    expected.append((float(scores[c, pj]), pj, c))
        expected = sorted(expected, reverse=True)[:25]
        assert [(i, c) for _, i, c in expected] == list(zip(idx.tolist(), cls.tolist()))
        torch.testing.assert_close(sc, torch.tensor([s for s, _, _ in expected]))


def test_nms_with_no_candidates_returns_empty():
    for fn in (fast_nms, standard_nms):
        idx, cls, sc = fn(torch.zeros(0, 4), torch.zeros(3, 0))
        assert idx.shape == cls.shape == sc.shape == (0,) and idx.dtype == torch.int64


def test_fast_nms_keeps_boxes_that_standard_nms_would_restore():
    # b overlaps a, c overlaps b but not a: greedy NMS keeps a and c, Fast NMS drops c (b still suppresses)
    boxes = torch.tensor([[0.0, 0, 10, 10], [4, 0, 14, 10], [8.5, 0, 18.5, 10]])
    scores = torch.tensor([[0.9, 0.8, 0.7]])
    fast = fast_nms(boxes, scores, 0.3)[0].tolist()
    greedy = standard_nms(boxes, scores, 0.3)[0].tolist()
    assert fast == [0] and greedy == [0, 2]


def test_crop_equals_a_naive_pixel_loop():
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(4, 9, 11, generator=g)
    boxes = torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.6, 0.0, 0.2, 0.4], [-0.2, 0.3, 1.3, 0.7], [0.33, 0.33, 0.34, 0.35]])
    out = crop_masks(masks, boxes, padding=1)
    for n in range(4):
        x1, x2 = sorted([float(boxes[n, 0]) * 11, float(boxes[n, 2]) * 11])
        y1, y2 = sorted([float(boxes[n, 1]) * 9, float(boxes[n, 3]) * 9])
        x1, x2, y1, y2 = max(x1 - 1, 0), min(x2 + 1, 11), max(y1 - 1, 0), min(y2 + 1, 9)
        for r in range(9):
            for c in range(11):
                inside = x1 <= c < x2 and y1 <= r < y2
                assert float(out[n, r, c]) == (float(masks[n, r, c]) if inside else 0.0)


def test_priors_official_layout_and_square_bug():
    pr = make_priors([(2, 3)], [(24,)], (1.0, 0.5, 2.0), (550, 550), square=True)
    assert pr.shape == (2 * 3 * 3, 4)
    # row-major over (y, x), then anchors; centre of cell (row 1, col 2) = (2.5/3, 1.5/2)
    torch.testing.assert_close(pr[(1 * 3 + 2) * 3, :2], torch.tensor([2.5 / 3, 1.5 / 2]))
    sides = torch.tensor([24.0, 24 * 0.5**0.5, 24 * 2**0.5]) / 550
    torch.testing.assert_close(pr[:3, 2], sides)
    torch.testing.assert_close(pr[:3, 3], sides)  # v1: square
    rect = make_priors([(1, 1)], [(24, 30)], (1.0, 0.5, 2.0), (550, 550), square=False)
    torch.testing.assert_close(rect[4, 2:], torch.tensor([30 * 0.5**0.5, 30 / 0.5**0.5]) / 550)  # scale-major
    for name, size in (("yolact_base_tiny", 550), ("yolact_plus_tiny_im400", 400)):
        fx = reference_dir(name)
        meta = __import__("json").loads((fx / "meta.json").read_text())["geometry"]
        grids = [tuple(g) for g in meta["levels_conv_wh_P3_to_P7"]]
        ours = make_priors(grids, [tuple(s) for s in meta["pred_scales"]], (1, 0.5, 2), (size, size),
                           square=meta["anchors_per_location"] == 3)  # fmt: skip
        np.testing.assert_allclose(ours.numpy(), np.load(fx / "outputs.npz")["priors"], atol=1e-6)


def test_box_coding_round_trip_and_variances():
    g = torch.Generator().manual_seed(2)
    priors = torch.cat([torch.rand(20, 2, generator=g), 0.05 + torch.rand(20, 2, generator=g) * 0.3], 1)
    boxes = _random_boxes(20, g)
    torch.testing.assert_close(decode_boxes(encode_boxes(boxes, priors), priors), boxes, atol=1e-5, rtol=1e-5)
    same = encode_boxes(point_form(priors), priors)
    torch.testing.assert_close(same, torch.zeros_like(same), atol=1e-5, rtol=0)
    d, z = priors[:, 2:3] * 0.1, torch.zeros(20, 1)
    shifted = point_form(priors) + torch.cat([d, z, d, z], 1)  # cx moves by 0.1 w: offset 1 with variance 0.1
    torch.testing.assert_close(encode_boxes(shifted, priors)[:, 0], torch.ones(20), atol=1e-4, rtol=0)  # 0.1 var


def test_pairwise_iou_matches_torchvision():
    from torchvision.ops import box_iou

    g = torch.Generator().manual_seed(3)
    a, b = _random_boxes(7, g), _random_boxes(5, g)
    torch.testing.assert_close(pairwise_iou(a, b), box_iou(a, b))
