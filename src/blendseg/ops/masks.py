"""Mask pasting: per-box (N, S, S) masks into the full image, as detectron2's ``paste_masks_in_image``.

Shape legend: N instances, S mask size, H x W image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .resize import bilinear_axis


def mask_extent(mask: Tensor) -> tuple[int, int, int, int] | None:
    """(y0, x0, y1, x1), ends past the last pixel, of a (H, W) mask's nonzero pixels (detectron2's
    ``BitMasks.get_bounding_boxes``), or None for an empty mask."""
    ys, xs = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    if len(ys) == 0:
        return None
    return int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1


def paste_masks_in_image(masks: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float = 0.5) -> Tensor:
    """(N, H, W) bool: each soft mask (N, S, S) resampled into its box (N, 4) xyxy pixels, then ``>= threshold``
    (:func:`paste_windows`, written into a full-size output)."""
    out = torch.zeros((masks.shape[0], *image_size), dtype=torch.bool, device=masks.device)
    for i, (y0, x0, window) in enumerate(paste_windows(masks, boxes, image_size, threshold)):
        out[i, y0 : y0 + window.shape[0], x0 : x0 + window.shape[1]] = window
    return out


def paste_window(
    mask: Tensor, box: Tensor, image_size: tuple[int, int], threshold: float = 0.5
) -> tuple[int, int, Tensor]:
    """One soft mask (S, S) pasted into its box (4,): :func:`paste_windows` of one instance."""
    return paste_windows(mask[None], box[None], image_size, threshold)[0]


def paste_windows(
    masks: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float = 0.5, budget: int = 1 << 20
) -> list[tuple[int, int, Tensor]]:
    """Soft masks (N, S, S) pasted into their boxes (N, 4) xyxy pixels of an image of ``image_size``, as
    detectron2's ``_do_paste_mask``: bilinear ``grid_sample`` (align_corners False, zero outside the mask) at pixel
    centres (+0.5), then ``>= threshold``. Only a box's pixel window (+1 px, inside the image) can be True: returns
    each instance's top-left (y0, x0) and (h, w) bool window, so memory follows the boxes, not the image.

    Instances are sampled together, in groups of similar window size (sorted by area) padded to the group's largest
    window, each group at most ``budget`` samples (an instance larger than that alone): one ``grid_sample`` a group
    instead of one an instance. Each window's samples are the same as sampled alone."""
    h, w = image_size
    b = boxes.float()
    lo = (b[:, :2].floor() - 1).clamp(min=0)  # (N, 2) x0, y0 of the windows
    hi = torch.minimum(b[:, 2:].ceil() + 1, b.new_tensor([w, h]))
    size = (hi - lo).clamp(min=0)
    lo_i, size_i = lo.long().tolist(), size.long().tolist()  # one read of the windows for the host
    out: list = [None] * len(b)
    for group in size_groups([tuple(v) for v in size_i], budget):
        mw, mh = max(size_i[i][0] for i in group), max(size_i[i][1] for i in group)
        if mw * mh == 0:  # empty windows only
            for i in group:
                out[i] = _no_window(masks.device)
            continue
        idx = torch.tensor(group, device=masks.device)
        gb, gl = b[idx], lo[idx]
        ys = torch.arange(mh, device=b.device, dtype=torch.float32) + gl[:, 1:2] + 0.5 - gb[:, 1:2]
        ys = ys / (gb[:, 3:4] - gb[:, 1:2]) * 2 - 1  # (n, mh)
        xs = torch.arange(mw, device=b.device, dtype=torch.float32) + gl[:, 0:1] + 0.5 - gb[:, 0:1]
        xs = xs / (gb[:, 2:3] - gb[:, 0:1]) * 2 - 1  # (n, mw)
        grid = torch.stack([xs[:, None, :].expand(-1, mh, -1), ys[:, :, None].expand(-1, -1, mw)], dim=3)
        soft = F.grid_sample(masks[idx, None].float(), grid, align_corners=False)[:, 0] >= threshold
        for j, i in enumerate(group):
            (x0, y0), (ww, hh) = lo_i[i], size_i[i]
            if ww == 0 or hh == 0:
                out[i] = _no_window(masks.device)
            else:  # a window of a group gets its own storage (it may be kept long after the group)
                out[i] = (y0, x0, soft[j, :hh, :ww] if len(group) == 1 else soft[j, :hh, :ww].clone())
    return out


def _no_window(device: torch.device) -> tuple[int, int, Tensor]:
    """The window of an instance with no pixel: at (0, 0), (0, 0) large."""
    return 0, 0, torch.zeros((0, 0), dtype=torch.bool, device=device)


def upsample_window(
    prob: Tensor, full_size: tuple[int, int], image_size: tuple[int, int], threshold: float = 0.5
) -> tuple[int, int, Tensor]:
    """One low-resolution mask (h, w): :func:`upsample_windows` of one instance."""
    return upsample_windows(prob[None], full_size, image_size, threshold)[0]


def upsample_windows(
    probs: Tensor,
    full_size: tuple[int, int],
    image_size: tuple[int, int],
    threshold: float = 0.5,
    budget: int = 1 << 20,
) -> list[tuple[int, int, Tensor]]:
    """Low-resolution masks (N, h, w), each zero outside some region (YOLACT's crop), bilinearly upsampled to
    ``full_size`` (``F.interpolate``, align_corners False), cut to the top-left ``image_size`` and ``> threshold``,
    each computed only where the upsampling can reach its nonzero region: returns per instance (y0, x0, window
    bool).

    Instances are resampled together in groups of similar window size padded to the group's largest, at most
    ``budget`` samples a group (:func:`paste_windows`' grouping): gathers of each instance's source rows and
    columns, along the width first and then the height, the order and arithmetic of PyTorch's kernel
    (:func:`~blendseg.ops.resize.resample_window`), or for windows near the image's size ``F.interpolate`` of the
    group's whole masks, so each window is the same as upsampled alone."""
    n = probs.shape[0]
    axes = [bilinear_axis(n_in, n_full) for n_in, n_full in zip(probs.shape[1:], full_size)]  # rows, cols
    reach = []  # per axis: (N,) first and end output index that can see the instance's nonzero extent
    for dim, ((i0, i1, _, _), n_img) in enumerate(zip(axes, image_size)):
        nonzero = (probs != 0).any(dim=2 - dim)  # (N, h) rows or (N, w) columns holding a nonzero value
        size = nonzero.shape[1]
        first = torch.where(nonzero.any(1), nonzero.float().argmax(1), size)
        last = size - 1 - nonzero.flip(1).float().argmax(1)
        # i0 <= i1 <= i0 + 1, both non-decreasing: output o sees [first, last] iff i1[o] >= first and i0[o] <= last
        a = torch.searchsorted(i1.to(probs.device), first)
        b = torch.searchsorted(i0.to(probs.device), last, right=True).clamp(max=n_img)
        reach.append((a.tolist(), torch.maximum(b - a, torch.zeros_like(b)).tolist()))
    (y0s, hs), (x0s, ws) = reach
    out: list = [None] * n
    for group in size_groups([(ws[i], hs[i]) for i in range(n)], budget):
        mh, mw = max(hs[i] for i in group), max(ws[i] for i in group)
        if mh * mw == 0:  # empty windows only
            for i in group:
                out[i] = _no_window(probs.device)
            continue
        x = probs[torch.tensor(group, device=probs.device)].float()  # (g, h, w)
        if full_size[0] * full_size[1] < 6 * mh * mw:  # windows near the image's size: PyTorch's own kernel
            whole = F.interpolate(x[:, None], full_size, mode="bilinear", align_corners=False)[:, 0]
            windows = [whole[k, y0s[i] : y0s[i] + hs[i], x0s[i] : x0s[i] + ws[i]] for k, i in enumerate(group)]
        else:  # a gathered sample costs about 6 of the kernel's (measured at 256-640 px)
            rows = _window_axes(axes[0], [y0s[i] for i in group], mh, probs.device)
            cols = _window_axes(axes[1], [x0s[i] for i in group], mw, probs.device)
            up = _resample_group(x, rows, cols)
            windows = [up[k, : hs[i], : ws[i]] for k, i in enumerate(group)]
        for win, i in zip(windows, group):
            if hs[i] == 0 or ws[i] == 0:
                out[i] = _no_window(probs.device)
            else:
                out[i] = (y0s[i], x0s[i], win > threshold)  # a new tensor: not the group's storage
    return out


def _resample_group(x: Tensor, rows: tuple[Tensor, ...], cols: tuple[Tensor, ...]) -> Tensor:
    """(g, mh, mw) bilinear samples of x (g, h, w), each instance at its own (g, mh) row and (g, mw) column indices
    and weights: :func:`~blendseg.ops.resize.resample_window`'s arithmetic, along the width first."""
    (i0, i1, l0, l1), (j0, j1, m0, m1) = rows, cols
    g, h, _ = x.shape
    mh, mw = i0.shape[1], j0.shape[1]
    r = x.gather(2, j0[:, None].expand(g, h, mw)) * m0[:, None]
    r = r + x.gather(2, j1[:, None].expand(g, h, mw)) * m1[:, None]  # (g, h, mw)
    up = r.gather(1, i0[:, :, None].expand(g, mh, mw)) * l0[:, :, None]
    return up + r.gather(1, i1[:, :, None].expand(g, mh, mw)) * l1[:, :, None]


def _window_axes(axis: tuple[Tensor, ...], starts: list[int], length: int, device) -> tuple[Tensor, ...]:
    """(g, length) source indices and weights of the output indices start..start+length of one axis (padded
    windows read past their end clamped to the axis: the padding is cut off afterwards)."""
    full = axis[0].shape[0]
    idx = (torch.tensor(starts)[:, None] + torch.arange(length)).clamp(max=full - 1)
    return tuple(t[idx].to(device) for t in axis)


def size_groups(sizes: list[tuple[int, int]], budget: int, waste: float = 4.0) -> list[list[int]]:
    """Indices of (w, h) windows in groups of similar size: sorted by area, a group grown while its count times
    its largest width and height stays within ``budget`` (a window larger than that alone) and within ``waste``
    times the group's own samples (the padding a group computes for nothing)."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i][0] * sizes[i][1])
    groups, start = [], 0
    while start < len(order):
        (mw, mh), end = sizes[order[start]], start + 1
        area = mw * mh
        while end < len(order):
            w, h = sizes[order[end]]
            ww, hh, n = max(mw, w), max(mh, h), end + 1 - start
            if n * ww * hh > budget or n * ww * hh > waste * (area + w * h):
                break
            mw, mh, end, area = ww, hh, end + 1, area + w * h
        groups.append(order[start:end])
        start = end
    return groups


def crop_and_resize_masks(masks: Tensor, boxes: Tensor, size: int) -> Tensor:
    """(M, size, size) float {0, 1} targets: each bitmask (M, H, W) cropped to its box (M, 4) and resized with
    RoIAlign (aligned, adaptive sampling) then ``>= 0.5``, as detectron2's ``BitMasks.crop_and_resize``.

    The compiled operator is called directly: ``torchvision.ops.roi_align`` sends CUDA inputs to its Python
    ``_roi_align`` when deterministic algorithms are on (for the sake of its backward, which targets never need),
    and that one loops over the whole mask for every bin: seconds a step at 800 x 1333 with 100 instances. The
    compiled forward is deterministic."""
    import torchvision.ops  # noqa: F401 - registers torch.ops.torchvision

    if masks.shape[0] == 0:
        return masks.new_zeros((0, size, size), dtype=torch.float32)
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=torch.float32)[:, None], boxes.float()], 1)
    out = torch.ops.torchvision.roi_align(masks[:, None].float(), rois, 1.0, size, size, 0, True)
    return (out[:, 0] >= 0.5).float()


def thing_semantic_map(masks: Tensor, labels: Tensor, size: tuple[int, int]) -> Tensor:
    """(H, W) int64 "thing" map: 0 background, label + 1 inside each mask (M, h, w), later instances painted over
    earlier ones (AdelaiDet's prepare_thing_sem_from_instance order); zero padding up to ``size``."""
    out = torch.zeros(size, dtype=torch.int64, device=labels.device)
    h, w = masks.shape[-2:]
    for m, c in zip(masks, labels):
        out[:h, :w][m.bool()] = int(c) + 1
    return out


def crop_masks(masks: Tensor, boxes: Tensor, padding: int = 1) -> Tensor:
    """YOLACT's crop: zero each mask (N, H, W) outside its box (N, 4) xyxy *relative*, widened by ``padding``
    pixels; column c is kept iff clamp(min(x1, x2) * W - padding, 0) <= c < clamp(max(x1, x2) * W + padding, W)."""
    n, h, w = masks.shape
    x1, x2 = _sanitize(boxes[:, 0], boxes[:, 2], w, padding)
    y1, y2 = _sanitize(boxes[:, 1], boxes[:, 3], h, padding)
    cols = torch.arange(w, device=masks.device, dtype=x1.dtype)[None, None, :]
    rows = torch.arange(h, device=masks.device, dtype=y1.dtype)[None, :, None]
    keep = (cols >= x1[:, None, None]) & (cols < x2[:, None, None]) & (rows >= y1[:, None, None])
    return masks * (keep & (rows < y2[:, None, None]))


def _sanitize(a: Tensor, b: Tensor, size: int, padding: int) -> tuple[Tensor, Tensor]:
    a, b = a * size, b * size
    return torch.clamp(torch.minimum(a, b) - padding, min=0), torch.clamp(torch.maximum(a, b) + padding, max=size)


def instance_mask_targets(target: dict, size: int) -> Tensor:
    """(M, size, size) float {0, 1} training targets of an image's instances cropped to their own boxes: polygon
    instances rasterised inside the box (detectron2 ``PolygonMasks.crop_and_resize``, the reference default
    MASK_FORMAT "polygon") when the target carries ``polygons``, the rest through :func:`crop_and_resize_masks`
    (``BitMasks``). The polygons are rasterised on the host from one read of the boxes and sent in one copy (one
    wait for the device an image, not one an instance)."""
    out = crop_and_resize_masks(target["masks"], target["boxes"], size)
    polygons = target.get("polygons")
    if polygons:
        import numpy as np

        from .rle import rasterize_polygons_in_box

        boxes = target["boxes"].detach().cpu().tolist()
        which = [i for i, rings in enumerate(polygons) if rings is not None]
        if which:
            drawn = np.stack(
                [rasterize_polygons_in_box([r.tolist() for r in polygons[i]], boxes[i], size) for i in which]
            )
            index = torch.tensor(which, device=out.device)
            out = out.index_copy(0, index, torch.from_numpy(drawn).to(out))
    return out
