"""FCOS loss values and normalisers against hand computation (adelaidet.md §1.4)."""

import dataclasses

import torch
import torch.nn.functional as F

from blendseg.config import FCOSConfig
from blendseg.modeling.core.fcos import FCOSOutput
from blendseg.modeling.core.fcos_loss import compute_locations, fcos_losses, fcos_targets

STRIDES = [8, 16]


def _setup(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 4, 4)]
    locs = compute_locations(feats, STRIDES)
    C = 3
    logits = [torch.randn(2, C, f.shape[2], f.shape[3], generator=g) for f in feats]
    reg = [torch.rand(2, 4, f.shape[2], f.shape[3], generator=g) * 3 for f in feats]
    ctr = [torch.randn(2, 1, f.shape[2], f.shape[3], generator=g) for f in feats]
    targets = [
        {
            "boxes": torch.tensor([[4.0, 6.0, 40.0, 44.0], [30.0, 30.0, 60.0, 50.0]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.tensor([[0.0, 0.0, 63.0, 63.0]]), "labels": torch.tensor([0])},
    ]
    out = FCOSOutput(logits, reg, ctr, None, locs, [(64, 64)] * 2, feats)
    t = fcos_targets(locs, STRIDES, targets, C, (32,), True, 1.5)
    return out, t, C


def _focal(x, y, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    pt = p * y + (1 - p) * (1 - y)
    return (ce * (1 - pt) ** gamma * (alpha * y + (1 - alpha) * (1 - y))).sum()


def test_losses_equal_hand_computation():
    out, t, C = _setup()
    cfg = FCOSConfig(num_classes=C, strides=tuple(STRIDES), sizes_of_interest=(32,))
    losses = fcos_losses(out, t, cfg)
    # flatten level-major, then image, y, x by hand
    flat = lambda xs: torch.cat([x[i].permute(1, 2, 0).reshape(-1, x.shape[1]) for x in xs for i in range(2)])  # noqa: E731
    logits, reg, q = flat(out.logits), flat(out.box_reg), flat(out.quality)[:, 0]
    pos = (t.labels != C).nonzero().squeeze(1)
    num_pos = max(float(len(pos)), 1.0)
    onehot = torch.zeros_like(logits)
    onehot[pos, t.labels[pos]] = 1
    torch.testing.assert_close(losses["loss_fcos_cls"], _focal(logits, onehot) / num_pos)
    rt = t.reg_targets[pos]
    ctr = torch.sqrt(
        (rt[:, [0, 2]].min(1).values / rt[:, [0, 2]].max(1).values)
        * (rt[:, [1, 3]].min(1).values / rt[:, [1, 3]].max(1).values)
    )
    torch.testing.assert_close(t.ctr_targets, ctr)
    rp = reg[pos]
    inter = (torch.min(rp[:, 0], rt[:, 0]) + torch.min(rp[:, 2], rt[:, 2])) * (
        torch.min(rp[:, 1], rt[:, 1]) + torch.min(rp[:, 3], rt[:, 3])
    )
    union = (rp[:, 0] + rp[:, 2]) * (rp[:, 1] + rp[:, 3]) + (rt[:, 0] + rt[:, 2]) * (rt[:, 1] + rt[:, 3]) - inter
    enc = (torch.max(rp[:, 0], rt[:, 0]) + torch.max(rp[:, 2], rt[:, 2])) * (
        torch.max(rp[:, 1], rt[:, 1]) + torch.max(rp[:, 3], rt[:, 3])
    ) + 1e-7
    iou = (inter + 1) / (union + 1)
    giou = iou - (enc - union) / enc
    torch.testing.assert_close(losses["loss_fcos_loc"], ((1 - giou) * ctr).sum() / ctr.sum())
    bce = F.binary_cross_entropy_with_logits(q[pos], ctr, reduction="sum")
    torch.testing.assert_close(losses["loss_fcos_ctr"], bce / num_pos)
    assert len(pos) > 2


def test_normalizer_variants_and_iou_quality():
    out, t, C = _setup(1)
    base = FCOSConfig(num_classes=C, strides=tuple(STRIDES), sizes_of_interest=(32,))
    fg = fcos_losses(out, t, base)["loss_fcos_cls"]
    moving = torch.tensor(100.0)
    mv = fcos_losses(out, t, dataclasses.replace(base, loss_normalizer_cls="moving_fg"), moving)["loss_fcos_cls"]
    expected_norm = 0.9 * 100 + 0.1 * float(t.num_pos_avg)
    torch.testing.assert_close(mv, fg * float(t.num_pos_avg) / expected_norm)
    torch.testing.assert_close(moving, torch.tensor(expected_norm))
    all_ = fcos_losses(out, t, dataclasses.replace(base, loss_normalizer_cls="all"))["loss_fcos_cls"]
    torch.testing.assert_close(all_, fg * float(t.num_pos_avg) / t.labels.numel())
    iou = fcos_losses(out, t, dataclasses.replace(base, box_quality="iou"))
    assert set(iou) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_iou"}
    assert all(torch.isfinite(v) for v in iou.values())
