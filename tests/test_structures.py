"""Compact instance masks: the same pixels as the dense paste / upsampling they replace, made per instance."""

import torch
import torch.nn.functional as F

from blendseg.ops.masks import crop_masks, paste_masks_in_image, upsample_windows
from blendseg.structures import BoxMasks, GridMasks, normalize_batch, pad_images


def test_box_masks_equal_the_dense_paste_and_index_like_a_tensor():
    torch.manual_seed(0)
    probs = torch.rand(6, 14, 14)
    boxes = torch.tensor([[3.2, 4.7, 40.1, 30.0], [-5.0, -3.0, 20.0, 12.0], [50.0, 30.0, 70.0, 50.0],
                          [10.0, 10.0, 10.5, 11.0], [0.0, 0.0, 64.0, 48.0], [63.0, 47.0, 90.0, 80.0]])  # fmt: skip
    dense = paste_masks_in_image(probs, boxes, (48, 64))
    masks = BoxMasks(probs, boxes, (48, 64))
    assert masks.shape == (6, 48, 64) and masks.dtype == torch.bool and len(masks) == 6
    assert torch.equal(masks.to_tensor(), dense)
    assert torch.equal(masks[2], dense[2]) and torch.equal(masks[-1], dense[-1])
    keep = torch.tensor([True, False, True, False, True, False])
    assert isinstance(masks[keep], BoxMasks) and torch.equal(masks[keep].to_tensor(), dense[keep])
    y0, x0, win = masks.window(0)
    assert win.shape[0] < 48 and win.shape[1] < 64  # only the box (+1 px) is ever made
    assert torch.equal(dense[0, y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]], win) and dense[0].sum() == win.sum()


def test_grid_masks_equal_the_dense_upsampling_of_cropped_prototypes():
    torch.manual_seed(1)
    probs = torch.rand(5, 24, 24)
    rel = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.7, 0.7, 0.99, 0.95], [0.3, 0.3, 0.31, 0.32],
                        [0.9, 0.0, 1.0, 0.2]])  # fmt: skip
    cropped = crop_masks(probs, rel)
    cropped[3] = 0  # an empty one
    full, size = (130, 130), (120, 97)  # upsampled to the padded input's full size, cut to the image
    dense = F.interpolate(cropped[None], full, mode="bilinear", align_corners=False)[0][:, : size[0], : size[1]] > 0.5
    masks = GridMasks(cropped, full, size)
    assert masks.shape == (5, 120, 97)
    assert torch.equal(masks.to_tensor(), dense)
    assert not masks[3].any()
    y0, x0, win = masks.window(2)
    assert win.numel() < 0.3 * 120 * 97 and dense[2].sum() == win.sum()


def test_grouped_upsample_windows_are_the_dense_upsampling(monkeypatch):
    """Many cropped masks of different sizes upsampled in padded groups (a small budget: several groups, the
    largest alone): each window, placed in the image, is the dense upsampling's mask exactly."""
    g = torch.Generator().manual_seed(2)
    lo = torch.rand(20, 2, generator=g) * 0.9
    rel = torch.cat([lo, lo + torch.rand(20, 2, generator=g) * 0.5], 1).clamp(max=1.0)
    rel[0] = torch.tensor([0.0, 0.0, 1.0, 1.0])
    cropped = crop_masks(torch.rand(20, 24, 24, generator=g), rel)
    cropped[5] = 0
    full, size = (130, 130), (120, 97)
    dense = F.interpolate(cropped[None], full, mode="bilinear", align_corners=False)[0][:, : size[0], : size[1]] > 0.5
    windows = upsample_windows(cropped, full, size, budget=3000)
    for i, (y0, x0, win) in enumerate(windows):
        placed = torch.zeros(size, dtype=torch.bool)
        placed[y0 : y0 + win.shape[0], x0 : x0 + win.shape[1]] = win
        assert torch.equal(placed, dense[i]), i
    assert windows[5][2].numel() == 0 and windows[0][2].shape == size
    monkeypatch.setattr(GridMasks, "SMALL", 100)  # to_tensor through the windows, as for large images
    assert torch.equal(GridMasks(cropped, full, size).to_tensor(), dense)


def test_uint8_images_stay_uint8_in_the_batch_and_normalise_as_float_ones():
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in ((40, 50), (33, 64))]
    small = pad_images(images, 32)
    assert small.tensor.dtype == torch.uint8 and small.tensor.shape == (2, 3, 64, 64)
    wide = pad_images([im.float() for im in images], 32)
    assert wide.tensor.dtype == torch.float32
    assert pad_images([images[0], images[1].float()], 32).tensor.dtype == torch.float32  # mixed: float
    mean, std = torch.tensor([103.5, 116.3, 123.7]), torch.tensor([57.4, 57.1, 58.4])
    for bgr in (False, True):
        torch.testing.assert_close(normalize_batch(small, mean, std, bgr), normalize_batch(wide, mean, std, bgr))
