"""BlendMask ops: blend vs a naive per-instance loop, and RoI pooling / blending / pasting vs the reference fixture."""

import numpy as np
import torch
import torch.nn.functional as F

from blendseg.ops.blend import blend, pool_bases
from blendseg.ops.masks import paste_masks_in_image, paste_window, paste_windows

from ..conftest import reference_dir


def test_blend_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    rois = torch.randn(3, 4, 8, 8, generator=g)
    attns = torch.randn(3, 4 * 2 * 2, generator=g)
    out = blend(rois, attns, "nearest")
    for n in range(3):
        a = attns[n].view(4, 2, 2)
        for y in range(8):
            for x in range(8):
                w = torch.softmax(a[:, y // 4, x // 4], dim=0)  # nearest: each attention cell covers 4x4 pixels
                torch.testing.assert_close(out[n, y, x], (w * rois[n, :, y, x]).sum())
    bil = blend(rois, attns.view(3, 4, 2, 2), "bilinear")
    up = F.interpolate(attns.view(3, 4, 2, 2), (8, 8), mode="bilinear", align_corners=False).softmax(1)
    torch.testing.assert_close(bil, (up * rois).sum(1))


def test_exported_blend_is_the_eager_blend():
    """Under torch.export the softmax is written out (exp, sums): the same values, large attentions included."""

    class Blend(torch.nn.Module):
        def forward(self, rois, attns):
            return blend(rois, attns)

    g = torch.Generator().manual_seed(2)
    rois, attns = torch.randn(5, 4, 8, 8, generator=g), 30 * torch.randn(5, 4, 3, 3, generator=g)
    exported = torch.export.export(Blend(), (rois, attns)).module()
    assert not any("softmax" in str(n.target) for n in torch.export.export(Blend(), (rois, attns)).graph.nodes)
    torch.testing.assert_close(exported(rois, attns), blend(rois, attns))


def test_paste_matches_full_image_grid_sample():
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(4, 14, 14, generator=g)
    boxes = torch.tensor([[3.2, 4.7, 30.1, 20.9], [-5.0, 2.0, 12.0, 40.0], [10.0, 10.0, 10.5, 11.0], [0, 0, 64, 48]])
    out = paste_masks_in_image(masks, boxes, (48, 64))
    for i in range(4):  # naive: sample the whole image
        x0, y0, x1, y1 = boxes[i]
        ys = ((torch.arange(48) + 0.5 - y0) / (y1 - y0) * 2 - 1).float()
        xs = ((torch.arange(64) + 0.5 - x0) / (x1 - x0) * 2 - 1).float()
        grid = torch.stack([xs[None].expand(48, -1), ys[:, None].expand(-1, 64)], 2)[None]
        ref = F.grid_sample(masks[i][None, None], grid, align_corners=False)[0, 0] >= 0.5
        assert torch.equal(out[i], ref), i


def test_grouped_paste_windows_are_each_pasted_alone():
    """Windows of many sizes (empty, outside the image, larger than the budget) sampled in padded groups give the
    same pixels as each sampled alone."""
    g = torch.Generator().manual_seed(3)
    probs = torch.rand(12, 14, 14, generator=g)
    xy, wh = torch.rand(12, 2, generator=g) * 90 - 10, torch.rand(12, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[0, 2:] = boxes[0, :2]  # empty
    boxes[1] = torch.tensor([200.0, 10.0, 230.0, 40.0])  # outside the image
    boxes[2] = torch.tensor([-20.0, -5.0, 120.0, 90.0])  # most of the image: over the budget, alone
    grouped = paste_windows(probs, boxes, (64, 80), budget=2000)
    for i, (y0, x0, win) in enumerate(grouped):
        ay0, ax0, alone = paste_window(probs[i], boxes[i], (64, 80))
        assert (y0, x0) == (ay0, ax0) and torch.equal(win, alone), i
        assert win.is_contiguous() and win.untyped_storage().nbytes() == win.numel(), i  # its own storage
    assert grouped[0][2].numel() == 0 and grouped[1][2].numel() == 0 and grouped[2][2].shape == (64, 80)


def test_pool_blend_paste_match_reference_fixture():
    d = reference_dir("blendmask_r18_tiny")
    o = np.load(d / "outputs.npz")
    bases = torch.from_numpy(o["bases"])
    boxes = torch.from_numpy(o["det_boxes"])
    rois = pool_bases(bases, boxes[:5], torch.zeros(5, dtype=torch.int64), 56, 4)
    ref_rois = o["det_rois_first5"]
    assert np.abs(rois.numpy() - ref_rois).max() <= 1e-4 * max(1.0, np.abs(ref_rois).max())
    logits = blend(rois, torch.from_numpy(o["det_top_feat"][:5]))
    ref = o["det_mask_logits"][:5]
    assert np.abs(logits.numpy() - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    keep = torch.from_numpy(o["final_keep_index"])
    probs = torch.sigmoid(torch.from_numpy(o["det_mask_logits"]))[keep]
    final_boxes = torch.from_numpy(o["final_boxes"][: len(keep)])
    masks = paste_masks_in_image(probs, final_boxes, (256, 320)).numpy()
    ref_masks = o["final_masks"][: len(keep)].copy()
    amb = o["final_mask_ambiguous_idx"]
    masks[amb[:, 0], amb[:, 1], amb[:, 2]] = False
    ref_masks[amb[:, 0], amb[:, 1], amb[:, 2]] = False
    assert ref_masks.sum() > 1000 and np.array_equal(masks, ref_masks)


def test_weighted_sum_is_yolact_and_assembler_is_fcis():
    from blendseg.ops.blend import assemble

    g = torch.Generator().manual_seed(2)
    rois = torch.randn(2, 4, 6, 6, generator=g)
    coeffs = torch.randn(2, 4, generator=g)
    # M = 1: one scalar per basis -> a softmax-weighted sum of the bases (YOLACT's linear combination)
    ws = blend(rois, coeffs, "bilinear")
    torch.testing.assert_close(ws, torch.einsum("nk,nkhw->nhw", coeffs.softmax(1), rois))
    # FCIS: with K = 4 = 2x2 bases, tile (i, j) of the region comes from basis 2i + j
    asm = assemble(rois)
    torch.testing.assert_close(asm[:, :3, :3], rois[:, 0, :3, :3])
    torch.testing.assert_close(asm[:, :3, 3:], rois[:, 1, :3, 3:])
    torch.testing.assert_close(asm[:, 3:, :3], rois[:, 2, 3:, :3])
    torch.testing.assert_close(asm[:, 3:, 3:], rois[:, 3, 3:, 3:])


def test_one_basis_uses_sigmoid_on_both():
    g = torch.Generator().manual_seed(3)
    rois = torch.randn(3, 1, 5, 5, generator=g)
    attns = torch.randn(3, 1 * 2 * 2, generator=g)
    logits = blend(rois, attns, "nearest")
    a = F.interpolate(attns.view(3, 1, 2, 2), (5, 5), mode="nearest")
    torch.testing.assert_close(
        torch.sigmoid(logits), (torch.sigmoid(rois) * torch.sigmoid(a))[:, 0], atol=1e-5, rtol=1e-4
    )


def test_nearest_bottom_sampling_is_roipool():
    from torchvision.ops import roi_pool

    bases = torch.randn(1, 4, 16, 16)
    boxes = torch.tensor([[4.0, 8.0, 40.0, 50.0]])
    out = pool_bases(bases, boxes, torch.zeros(1, dtype=torch.int64), 7, 4, "nearest")
    torch.testing.assert_close(out, roi_pool(bases, torch.tensor([[0.0, 4, 8, 40, 50]]), (7, 7), 0.25))
