import pytest
import torch
import torch.nn.functional as F

from blendseg.modeling.blendmask import TopLayer
from blendseg.modeling.fcos import FCOSHead
from blendseg.ops.conv import patches_at


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


def test_only_a_single_conv_embed_head_is_deferred():
    tower = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 3, padding=1))
    assert not FCOSHead(8, 3, 3, embed_head=tower).defers_embeds
    assert not FCOSHead(8, 3, 3, embed_head=torch.nn.Conv2d(8, 4, 3, padding=2, dilation=2)).defers_embeds
    assert not FCOSHead(8, 3, 3).defers_embeds
