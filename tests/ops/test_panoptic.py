"""Panoptic FPN's combine heuristic on hand-built inputs, and the chunked semantic postprocess against
F.interpolate."""

import pytest
import torch
import torch.nn.functional as F

from blendseg.ops.panoptic import combine_semantic_and_instances, semantic_argmax, semantic_logits_rows


def _box(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y1, x0:x1] = True
    return m


def test_score_cut_overlap_rule_and_partial_placement():
    h, w = 10, 10
    masks = torch.stack([
        _box(h, w, 0, 4, 0, 4),  # 16 px, score 0.9: placed first
        _box(h, w, 2, 6, 2, 6),  # 16 px, 4 overlap -> 0.25 <= 0.4: placed on its 12 free pixels
        _box(h, w, 0, 4, 1, 5),  # 16 px, 12 + 4 ... overlap 16/16 > 0.4: skipped
        _box(h, w, 8, 10, 8, 10),  # score 0.44 < 0.45: the loop stops here
        _box(h, w, 8, 10, 0, 2),  # score 0.8 but empty? no: 4 px, no overlap: placed (visited before 0.44)
    ])  # fmt: skip
    scores = torch.tensor([0.9, 0.7, 0.6, 0.44, 0.8])
    labels = torch.tensor([3, 1, 2, 0, 5])
    semantic = torch.zeros(h, w, dtype=torch.int64)
    pan, info = combine_semantic_and_instances(masks, scores, labels, semantic, 0.4, 4096, 0.45)
    assert [s["instance_id"] for s in info] == [0, 4, 1]  # by score; 2 skipped, 3 below the cut
    assert [s["category_id"] for s in info] == [3, 5, 1] and all(s["isthing"] for s in info)
    assert info[0]["score"] == pytest.approx(0.9)
    assert int((pan == 1).sum()) == 16 and int((pan == 2).sum()) == 4 and int((pan == 3).sum()) == 12
    assert not pan[8:, 8:].any()  # the 0.44 instance was never placed
    assert pan.dtype == torch.int32


def test_overlap_ratio_exactly_at_threshold_is_placed_and_empty_masks_skipped():
    h, w = 4, 10
    masks = torch.stack([_box(h, w, 0, 4, 0, 2), _box(h, w, 0, 4, 0, 5), torch.zeros(h, w, dtype=torch.bool)])
    scores = torch.tensor([0.9, 0.8, 0.95])
    pan, info = combine_semantic_and_instances(masks, scores, torch.tensor([0, 1, 2]), torch.zeros(h, w), 0.4, 1)
    assert [s["instance_id"] for s in info] == [0, 1]  # 8/20 = 0.4 is not > 0.4; the empty mask is skipped
    assert int((pan == 2).sum()) == 12


def test_stuff_area_limit_on_free_pixels_in_label_order():
    h, w = 10, 10
    semantic = torch.zeros(h, w, dtype=torch.int64)
    semantic[:5] = 3  # 50 px of stuff 3
    semantic[5:, :4] = 1  # 20 px of stuff 1
    semantic[5:, 4:6] = 2  # 10 px of stuff 2
    masks = _box(h, w, 0, 5, 0, 4)[None]  # a thing covering 20 px of stuff 3
    pan, info = combine_semantic_and_instances(masks, torch.tensor([0.9]), torch.tensor([0]), semantic, 0.4, 15)
    stuff = [s for s in info if not s["isthing"]]
    assert [(s["category_id"], s["area"]) for s in stuff] == [(1, 20), (3, 30)]  # stuff 2 (10 px) < 15: dropped
    assert [s["id"] for s in info] == [1, 2, 3]
    assert not pan[5:, 4:6].any()  # void where stuff 2 was dropped
    assert not pan[5:, 6:].any()  # label 0 ("things") never becomes stuff
    assert bool((pan[:5, 4:] == 3).all())


@pytest.mark.parametrize(
    ("padded", "image", "output"),
    [((16, 20), (64, 80), (64, 80)), ((16, 20), (61, 77), (130, 170)), ((16, 20), (60, 70), (37, 45))],
)
def test_semantic_rows_and_argmax_match_interpolate(padded, image, output):
    torch.manual_seed(0)
    logits = torch.randn(7, *padded)
    up = F.interpolate(logits[None], scale_factor=4, mode="bilinear", align_corners=False)[0, :, : image[0], : image[1]]
    ref = F.interpolate(up[None], size=output, mode="bilinear", align_corners=False)[0]
    rows = [semantic_logits_rows(logits, image, output, 4, (a, min(output[0], a + 5))) for a in range(0, output[0], 5)]
    torch.testing.assert_close(torch.cat(rows, 1), ref, rtol=0, atol=1e-5)
    got = semantic_argmax(logits, image, output, 4, chunk_bytes=4000)  # several chunks
    assert got.dtype == torch.int32 and torch.equal(got.long(), ref.argmax(0))
