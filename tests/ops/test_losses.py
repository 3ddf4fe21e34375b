import math

import torch

from blendseg.ops.losses import centerness_target, iou_loss_ltrb, ltrb_iou


def _naive(pred, target, kind):
    """Per-box loop on explicit corners around the shared point (0, 0)."""
    out = []
    for p, t in zip(pred.tolist(), target.tolist()):
        pb = (-p[0], -p[1], p[2], p[3])
        tb = (-t[0], -t[1], t[2], t[3])
        iw = max(0.0, min(pb[2], tb[2]) - max(pb[0], tb[0]))
        ih = max(0.0, min(pb[3], tb[3]) - max(pb[1], tb[1]))
        inter = iw * ih
        area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
        union = area(pb) + area(tb) - inter
        iou = (inter + 1) / (union + 1)
        enc = (max(pb[2], tb[2]) - min(pb[0], tb[0])) * (max(pb[3], tb[3]) - min(pb[1], tb[1])) + 1e-7
        giou = iou - (enc - union) / enc
        out.append({"iou": -math.log(iou), "linear_iou": 1 - iou, "giou": 1 - giou}[kind])
    return torch.tensor(out, dtype=torch.float64)


def test_iou_losses_match_naive_corners():
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(50, 4, generator=g, dtype=torch.float64) * 5
    target = torch.rand(50, 4, generator=g, dtype=torch.float64) * 5 + 0.1
    w = torch.rand(50, generator=g, dtype=torch.float64)
    for kind in ("iou", "linear_iou", "giou"):
        ref = _naive(pred, target, kind)
        torch.testing.assert_close(iou_loss_ltrb(pred, target, None, kind), ref.sum())
        torch.testing.assert_close(iou_loss_ltrb(pred, target, w, kind), (ref * w).sum())


def test_plus_one_smoothing_makes_loss_unit_dependent():
    t = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    p = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    small = iou_loss_ltrb(p, t, None, "linear_iou")
    big = iou_loss_ltrb(p * 100, t * 100, None, "linear_iou")
    assert small < big  # (1 + 1)/(4 + 1) vs (10000 + 1)/(40000 + 1)
    torch.testing.assert_close(small, torch.tensor(1 - 2 / 5))


def test_ltrb_iou_and_centerness():
    t = torch.tensor([[2.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(ltrb_iou(t, t), torch.ones(2))
    ctr = centerness_target(t)
    torch.testing.assert_close(ctr, torch.tensor([math.sqrt(1.0 * (1 / 3)), 1.0]))
    assert centerness_target(torch.zeros(0, 4)).shape == (0,)
