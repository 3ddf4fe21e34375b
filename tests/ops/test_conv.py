import pytest
import torch
import torch.nn.functional as F

from blendseg.modeling.core.fcos import FCOSHead
from blendseg.modeling.methods.blendmask import TopLayer
from blendseg.modeling.methods.meinst import MaskBranch
from blendseg.modeling.methods.yolact import PredictionHead
from blendseg.ops.conv import conv_at, patches_at


@pytest.mark.parametrize("kernel_size,padding", [(3, 1), (1, 0), (5, 2), (3, 0)])
def test_patches_at_times_weight_is_the_dense_conv(kernel_size, padding):
    torch.manual_seed(0)
    x, w, b = torch.randn(6, 9, 11), torch.randn(5, 6, kernel_size, kernel_size), torch.randn(5)
    dense = F.conv2d(x[None], w, b, padding=padding)[0]  # (E, H', W')
    ys = torch.tensor([0, 0, dense.shape[1] - 1, 3, dense.shape[1] - 1])
    xs = torch.tensor([0, dense.shape[2] - 1, 0, 4, dense.shape[2] - 1])  # corners read the zero padding
    sparse = patches_at(x, ys, xs, kernel_size, padding) @ w.flatten(1).t() + b
    torch.testing.assert_close(sparse, dense[:, ys, xs].t(), rtol=1e-5, atol=1e-5)


def test_embeds_at_equals_the_dense_embeddings_at_kept_locations():
    torch.manual_seed(0)
    top = TopLayer(8, 12, 3, padding=1)
    head = FCOSHead(8, 3, 3, num_cls_convs=1, num_box_convs=1, norm="", embed_head=top)
    assert head.defers_embeds
    feats = [torch.randn(2, 8, 10, 12), torch.randn(2, 8, 5, 6), torch.randn(2, 8, 3, 3)]
    *_, dense = head(feats)
    *_, inputs = head(feats, dense_embeds=False)
    assert [t.shape[1] for t in inputs] == [8, 8, 8]  # the box tower's outputs, not embeddings
    flat = torch.cat([e[1].flatten(1) for e in dense], 1)  # image 1, (E, all locations) level-major
    loc_inds = torch.tensor([0, 119, 120, 149, 150, 158, 57, 11])  # first / last of every level, and inner ones
    got = head.embeds_at([t[1] for t in inputs], loc_inds)
    torch.testing.assert_close(got, flat[:, loc_inds].t(), rtol=1e-5, atol=1e-5)


def test_conv_at_gathers_the_dense_conv_of_every_level():
    torch.manual_seed(0)
    maps = [torch.randn(4, 7, 9), torch.randn(4, 4, 5), torch.randn(4, 1, 1)]  # a 1x1 level reads padding only
    w, b = torch.randn(6, 4, 3, 3), torch.randn(6)
    flat = torch.cat([F.conv2d(m[None], w, b, padding=1)[0].flatten(1) for m in maps], 1)  # (E, 63 + 20 + 1)
    loc_inds = torch.tensor([83, 0, 62, 63, 82, 40, 70])
    torch.testing.assert_close(conv_at(maps, loc_inds, w, b, 1), flat[:, loc_inds].t(), rtol=1e-5, atol=1e-5)
    assert conv_at(maps, loc_inds[:0], w, None, 1).shape == (0, 6)


def test_meinst_code_conv_is_deferred_after_its_mask_tower():
    torch.manual_seed(0)
    branch = MaskBranch(8, 5, 2, "GN", 2, deform_last=False, dcn_v1=False)
    for m in branch.modules():  # the reference init (std 0.01) would make every code ~0
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight)
    head = FCOSHead(8, 3, 2, num_cls_convs=1, num_box_convs=1, norm="GN", embed_head=branch, embed_from="share_tower")
    assert head.defers_embeds and head.embed_conv is branch.mask_pred
    feats = [torch.randn(2, 8, 6, 7), torch.randn(2, 8, 3, 4)]
    *_, dense = head(feats)
    *_, inputs = head(feats, dense_embeds=False)
    assert [t.shape[1] for t in inputs] == [8, 8]  # the mask tower's outputs
    flat = torch.cat([e[0].flatten(1) for e in dense], 1)
    loc_inds = torch.tensor([0, 41, 42, 53, 20])
    torch.testing.assert_close(head.embeds_at([t[0] for t in inputs], loc_inds), flat[:, loc_inds].t())
    large = MaskBranch(8, 5, 1, "GN", 2, deform_last=False, dcn_v1=False, large_kernel=3)
    assert not FCOSHead(8, 3, 2, embed_head=large, embed_from="share_tower").defers_embeds


def test_yolact_coefficients_at_kept_priors_equal_the_dense_ones():
    torch.manual_seed(0)
    head = PredictionHead(8, num_anchors=3, num_classes=4, num_prototypes=5)
    pyramid = [torch.randn(1, 8, 6, 6), torch.randn(1, 8, 3, 3), torch.randn(1, 8, 2, 2)]
    dense = torch.cat([head(p)[2] for p in pyramid], 1)[0]  # (P, k), P = 3 * (36 + 9 + 4)
    ups = [head(p, dense_coef=False)[2][0] for p in pyramid]
    prior = torch.tensor([0, 1, 2, 107, 108, 146, 130, 146, 55])  # every anchor, level borders, a repeat
    torch.testing.assert_close(head.coefs_at(ups, prior), dense[prior], rtol=1e-5, atol=1e-6)


def test_only_a_single_conv_embed_head_is_deferred():
    tower = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 3, padding=1))
    assert not FCOSHead(8, 3, 3, embed_head=tower).defers_embeds
    assert not FCOSHead(8, 3, 3, embed_head=torch.nn.Conv2d(8, 4, 3, padding=2, dilation=2)).defers_embeds
    assert not FCOSHead(8, 3, 3).defers_embeds
