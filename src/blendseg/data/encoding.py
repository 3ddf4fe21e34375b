"""Fit MEInst's mask encoding on a COCO dataset, as the reference's offline script (adelaidet.md §3.3): every
non-crowd instance mask cropped to its own box at S x S (polygons rasterised inside the box, RLE masks through
RoIAlign), the inverse-sigmoid preprocessing, PCA with whitening; streamed, so memory stays bounded."""

from __future__ import annotations

import numpy as np
import torch

from ..ops.mask_encoding import PCACodec, StreamingPCA, inverse_sigmoid_targets, reconstruction_iou
from ..ops.masks import crop_and_resize_masks
from ..ops.rle import decode, rasterize_polygons_in_box


def box_masks(dataset, mask_size: int = 28, chunk: int = 1024):
    """Yield (n, S*S) float {0, 1} batches of every non-crowd annotation's mask cropped to its box."""
    buf: list[np.ndarray] = []
    for info in dataset.images:
        h, w = info["height"], info["width"]
        for a in dataset.anns[info["id"]]:
            if a.get("iscrowd", 0) or a.get("segmentation") is None:
                continue
            x, y, bw, bh = a["bbox"]
            box = [x, y, x + bw, y + bh]
            segm = a["segmentation"]
            if isinstance(segm, list):
                m = rasterize_polygons_in_box(segm, box, mask_size)
            else:
                full = torch.from_numpy(decode(segm, h, w))[None]
                m = crop_and_resize_masks(full, torch.tensor([box], dtype=torch.float32), mask_size)[0].numpy()
            buf.append(m.reshape(-1).astype(np.float32))
            if len(buf) == chunk:
                yield torch.from_numpy(np.stack(buf))
                buf = []
    if buf:
        yield torch.from_numpy(np.stack(buf))


def fit_encoding(dataset, dim: int = 60, mask_size: int = 28, sigmoid: bool = True, seed: int = 0) -> dict:
    """PCA of the dataset's box masks. Returns components (D, P), explained_variance (D,), mean (P,),
    explained_variance_ratio (D,), num_masks and reconstruction_miou (encode -> decode -> > 0.5 on the same masks)."""
    g = torch.Generator().manual_seed(seed)
    pca = StreamingPCA(mask_size * mask_size)
    for batch in box_masks(dataset, mask_size):
        pca.update(inverse_sigmoid_targets(batch, g) if sigmoid else batch)
    if pca.n <= dim:
        from ..errors import DataError

        where = getattr(dataset, "ann_file", "the dataset")
        raise DataError(
            f"{where}: {pca.n} non-crowd instance masks, MEInst's {dim}-d encoding needs more masks than dimensions "
            "(fit it on a larger set with `blendseg fit-encoding` and pass model.meinst.encoding_file=...)"
        )
    comps, ev, mean, ratio = pca.fit(dim)
    codec = PCACodec(dim, mask_size, whiten=True, sigmoid=sigmoid)
    codec.load_fit(comps, ev, mean)
    ious = torch.cat([reconstruction_iou(codec, b, g) for b in box_masks(dataset, mask_size)])
    return {
        "components": comps,
        "explained_variance": ev,
        "mean": mean,
        "explained_variance_ratio": ratio,
        "num_masks": pca.n,
        "reconstruction_miou": float(ious.mean()),
    }
