"""FCOS decoding against a naive loop, and the post-NMS kthvalue / detector_postprocess rules."""

import torch
from torchvision.ops import nms

from blendseg.modeling.core.fcos_inference import Detections, detector_postprocess, fcos_decode
from blendseg.modeling.core.fcos_loss import compute_locations


def _naive(logits, reg, ctr, locs, strides, th, thresh_with_ctr):
    cands = []
    for lvl, (lg, rg, ct) in enumerate(zip(logits, reg, ctr)):
        C, H, W = lg.shape[1:]
        for i in range(H):
            for j in range(W):
                c = torch.sigmoid(ct[0, 0, i, j])
                for k in range(C):
                    p = torch.sigmoid(lg[0, k, i, j])
                    test = p * c if thresh_with_ctr else p
                    if test > th:
                        x, y = locs[lvl][i * W + j].tolist()
                        s = strides[lvl]
                        r = rg[0, :, i, j] * s
                        box = [x - r[0], y - r[1], x + r[2], y + r[3]]
                        cands.append((float(torch.sqrt(p * c)), k, box))
    kept = []
    for k in sorted({c[1] for c in cands}):
        cl = [c for c in cands if c[1] == k]
        b = torch.tensor([c[2] for c in cl])
        s = torch.tensor([c[0] for c in cl])
        kept += [(float(s[i]), k, b[i].tolist()) for i in nms(b, s, 0.6).tolist()]
    return sorted(kept, key=lambda c: -c[0])


def test_decode_matches_naive():
    g = torch.Generator().manual_seed(0)
    strides = [8, 16]
    feats = [torch.zeros(1, 1, 6, 7), torch.zeros(1, 1, 3, 4)]
    locs = compute_locations(feats, strides)
    logits = [torch.randn(1, 3, *f.shape[2:], generator=g) for f in feats]
    reg = [torch.rand(1, 4, *f.shape[2:], generator=g) * 2 for f in feats]
    ctr = [torch.randn(1, 1, *f.shape[2:], generator=g) for f in feats]
    for twc in (False, True):
        d = fcos_decode(logits, reg, ctr, None, locs, strides, 0.5, 1000, 0.6, 100, twc)[0]
        ref = _naive(logits, reg, ctr, locs, strides, 0.5, twc)
        assert len(d) == len(ref) > 3
        torch.testing.assert_close(d.scores, torch.tensor([r[0] for r in ref]))
        assert d.labels.tolist() == [r[1] for r in ref]
        torch.testing.assert_close(d.boxes, torch.tensor([r[2] for r in ref]))


def test_post_nms_topk_and_embeddings():
    strides = [8]
    feats = [torch.zeros(1, 1, 4, 4)]
    locs = compute_locations(feats, strides)
    logits = [torch.full((1, 2, 4, 4), 3.0)]
    logits[0][0, 1] = torch.linspace(-1, 2, 16).view(4, 4)
    reg = [torch.full((1, 4, 4, 4), 0.2)]  # small disjoint boxes: NMS keeps all
    ctr = [torch.zeros(1, 1, 4, 4)]
    emb = [torch.arange(16.0).view(1, 1, 4, 4).repeat(1, 2, 1, 1)]
    d = fcos_decode(logits, reg, ctr, emb, locs, strides, 0.05, 1000, 0.6, 5, False)[0]
    # 16 tied class-0 candidates: kthvalue keeps every tie (more than 5), as the reference
    assert len(d) == 16 and bool((d.labels == 0).all())
    idx = (d.locations[:, 1] // 8 * 4 + d.locations[:, 0] // 8).long()
    torch.testing.assert_close(d.embeds[:, 0], idx.float())
    assert d.loc_inds.tolist() == idx.tolist()


def test_detector_postprocess_scales_clips_and_drops():
    d = Detections(
        boxes=torch.tensor([[-5.0, 10.0, 50.0, 40.0], [70.0, 10.0, 90.0, 20.0], [10.0, 10.0, 20.0, 30.0]]),
        scores=torch.tensor([0.9, 0.8, 0.7]),
        labels=torch.tensor([0, 1, 2]),
        locations=torch.zeros(3, 2),
        levels=torch.zeros(3, dtype=torch.int64),
        loc_inds=torch.tensor([4, 9, 2]),
    )
    out = detector_postprocess(d, (64, 64), (128, 128))  # x2, then clip to 128
    # box 1 starts at 140 > 128: empty after clipping
    assert out.labels.tolist() == [0, 2] and out.loc_inds.tolist() == [4, 2]
    torch.testing.assert_close(out.boxes, torch.tensor([[0.0, 20.0, 100.0, 80.0], [20.0, 20.0, 40.0, 60.0]]))
