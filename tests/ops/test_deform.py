import pytest
import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from blendseg.ops.deform import deform_conv2d


@pytest.mark.parametrize(
    "size,stride,padding,dilation,groups,modulated",
    [((9, 11), 1, 1, 1, 1, True), ((9, 11), 1, 1, 1, 1, False), ((10, 13), 2, 1, 1, 1, True),
     ((8, 8), 1, 2, 2, 1, True), ((7, 9), 1, 1, 1, 4, True), ((1, 5), 1, 1, 1, 1, True)],
)  # fmt: skip
def test_equals_torchvision(size, stride, padding, dilation, groups, modulated):
    torch.manual_seed(0)
    C, O = 8, 12
    x = torch.randn(2, C, *size, dtype=torch.float64)
    w = torch.randn(O, C // groups, 3, 3, dtype=torch.float64)
    b = torch.randn(O, dtype=torch.float64)
    ho = (size[0] + 2 * padding - dilation * 2 - 1) // stride + 1
    wo = (size[1] + 2 * padding - dilation * 2 - 1) // stride + 1
    offset = torch.randn(2, 18, ho, wo, dtype=torch.float64) * 3  # many taps fall outside the image
    offset[:, :4] = offset[:, :4].round()  # integer positions too (on pixel centres and borders)
    mask = torch.rand(2, 9, ho, wo, dtype=torch.float64) if modulated else None
    ref = tv_deform_conv2d(x, offset, w, b, stride, padding, dilation, mask)
    got = deform_conv2d(x, offset, w, b, stride, padding, dilation, mask)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_gradients_equal_torchvision():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 6, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    offset = (torch.randn(1, 18, 6, 7, dtype=torch.float64) * 0.7 + 0.3).requires_grad_()
    mask = torch.rand(1, 9, 6, 7, dtype=torch.float64, requires_grad=True)
    grads = []
    for fn in (tv_deform_conv2d, deform_conv2d):
        out = fn(x, offset, w, None, 1, 1, 1, mask)
        grads.append(torch.autograd.grad((out * out.detach().cos()).sum(), (x, w, offset, mask)))
    for ref, got in zip(*grads):
        torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-8)


def test_more_offset_groups_are_refused():
    with pytest.raises(ValueError, match="one offset group"):
        deform_conv2d(torch.randn(1, 4, 5, 5), torch.randn(1, 36, 5, 5), torch.randn(4, 4, 3, 3), padding=1)
