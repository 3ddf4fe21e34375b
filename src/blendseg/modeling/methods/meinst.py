"""MEInst on the shared FCOS core: a mask tower beside the class / box towers (the core's extension point, fed the
shared feature) regresses a D-d code per location; codes decode to 28x28 masks through a PCA fitted on the
user's own training masks (adelaidet.md §3; the paper's encoding / loss / receptive-field ablations as options).

Shape legend: N images, Q positives, D code size, S mask size, P = S*S, G ground truths, F channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import MEInstConfig, MEInstHeadConfig
from ...ops.mask_encoding import PCACodec
from ...ops.masks import instance_mask_targets
from ...structures import ImageBatch, targets_to
from ...weights_io import read_weights
from ..core.fcos import FCOS, build_fcos, make_tower, run_tower
from ..core.fcos_inference import Detections, finalize_with_masks
from ..core.fcos_loss import flatten_levels
from ..core.fcos_types import FCOSOutput


class LargeKernel(nn.Module):
    """Large-kernel prediction layer (Peng et al.): (k x 1 then 1 x k) + (1 x k then k x 1)."""

    def __init__(self, cin: int, cout: int, k: int = 9) -> None:
        super().__init__()
        p = k // 2
        self.conv_l1 = nn.Conv2d(cin, cout, (k, 1), padding=(p, 0))
        self.conv_l2 = nn.Conv2d(cout, cout, (1, k), padding=(0, p))
        self.conv_r1 = nn.Conv2d(cin, cout, (1, k), padding=(0, p))
        self.conv_r2 = nn.Conv2d(cout, cout, (k, 1), padding=(p, 0))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_l2(self.conv_l1(x)) + self.conv_r2(self.conv_r1(x))


class MaskBranch(nn.Module):
    """The mask tower (conv-norm-ReLU x n, the last optionally DCNv1) and ``mask_pred`` (D or P outputs); the FCOS
    core calls it at every level on the shared feature."""

    def __init__(
        self,
        channels: int,
        out_dim: int,
        num_convs: int,
        norm: str,
        num_levels: int,
        deform_last: bool,
        dcn_v1: bool,
        large_kernel: int = 0,
    ) -> None:
        super().__init__()
        self.mask_tower = make_tower(num_convs, channels, norm, num_levels, deform_last, dcn_v1)
        self.mask_pred = (
            LargeKernel(channels, out_dim, large_kernel) if large_kernel else nn.Conv2d(channels, out_dim, 3, padding=1)
        )
        for m in self.modules():  # the reference head init: N(0, 0.01), zero bias (offset convs included)
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    @property
    def last_conv(self) -> nn.Conv2d | None:
        """``mask_pred`` when it is one conv: the FCOS core then runs it at the kept locations only at inference."""
        return self.mask_pred if isinstance(self.mask_pred, nn.Conv2d) else None

    def trunk(self, x: Tensor, level: int) -> Tensor:
        return run_tower(self.mask_tower, x, level)

    def forward(self, x: Tensor, level: int) -> Tensor:
        return self.mask_pred(self.trunk(x, level))


@dataclass
class MEInstOutput:
    """FCOS outputs (codes in ``fcos.embeds``) and, with targets, every loss."""

    fcos: FCOSOutput
    losses: dict[str, Tensor] = field(default_factory=dict)


def meinst_mask_loss(out: FCOSOutput, targets: list[dict[str, Tensor]], c: MEInstHeadConfig, codec: PCACodec) -> Tensor:
    """Mask loss of every FCOS positive against its matched GT mask cropped to the GT box at S x S, weighted by the
    centerness target and normalised as the reference: per-dimension loss summed over D (or pixel BCE summed over
    P), x ctr, summed, / max(ctr_sum * D (or P), 1)."""
    t = out.targets
    preds = flatten_levels(out.embeds)[t.pos_inds]  # (Q, D or P)
    keep_graph = preds.sum() * 0 + sum(e.sum() * 0 for e in out.embeds)
    if t.pos_inds.numel() == 0:
        return keep_graph
    gt_inds = t.gt_inds[t.pos_inds]
    masks = torch.cat([instance_mask_targets(tg, c.mask_size) for tg in targets])
    gt = masks[gt_inds].flatten(1)  # (Q, P) {0, 1}
    ctr = t.ctr_targets
    if c.encoding == "pca":
        codes = codec.encode(gt)
        if c.mask_loss == "cosine":
            per = 1 - F.cosine_similarity(preds, codes, dim=1)
            return (per * ctr).sum() / torch.clamp(t.loss_denorm, min=1.0) + keep_graph
        fn = {"mse": F.mse_loss, "l1": F.l1_loss, "smooth_l1": F.smooth_l1_loss}[c.mask_loss]
        per = fn(preds, codes, reduction="none").sum(1)
        return (per * ctr).sum() / torch.clamp(t.loss_denorm * codes.shape[1], min=1.0) + keep_graph
    logits = codec.decode(preds) if c.encoding == "implicit" else preds
    per = F.binary_cross_entropy_with_logits(logits, gt, reduction="none").sum(1)
    return (per * ctr).sum() / torch.clamp(t.loss_denorm * gt.shape[1], min=1.0) + keep_graph


class MEInst(nn.Module):
    """MEInst: ``forward(images, targets=None) -> MEInstOutput`` (targets need ``masks``);
    ``postprocess(out, original_sizes)`` -> Detections with ``masks``. The encoding must be fitted (or loaded)
    before training: :meth:`prepare` does it from the training set when the checkpoint has none."""

    def __init__(self, fcos: FCOS, mask_encoding: PCACodec, cfg: MEInstConfig) -> None:
        super().__init__()
        self.fcos = fcos
        self.mask_encoding = mask_encoding
        self.cfg = cfg

    def forward(self, images: ImageBatch | list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        fout = self.fcos(images, targets)
        out = MEInstOutput(fout)
        if targets is not None:
            c = self.cfg.meinst
            if c.encoding != "none" and not self.mask_encoding.fitted:
                raise RuntimeError("MEInst's mask encoding is not fitted: run prepare(dataset) or load one")
            targets = targets_to(targets, fout.logits[0].device)
            out.losses = dict(fout.losses)
            loss = meinst_mask_loss(fout, targets, c, self.mask_encoding) * c.mask_loss_weight
            out.losses["loss_mask"] = loss
        return out

    @torch.no_grad()
    def mask_probs(self, dets: list[Detections]) -> list[Tensor]:
        """Per image (D, S, S) mask probabilities of the detections' codes."""
        return [self.code_probs(d.embeds) for d in dets]

    def code_probs(self, codes: Tensor) -> Tensor:
        """(D, S, S) mask probabilities of codes (D, E): the PCA decode, or the raw S*S logits without encoding."""
        c = self.cfg.meinst
        if c.encoding == "none":
            return codes.sigmoid().view(-1, c.mask_size, c.mask_size)
        return self.mask_encoding.probabilities(codes)

    @torch.no_grad()
    def postprocess(self, out: MEInstOutput, original_sizes: list[tuple[int, int]] | None = None) -> list[Detections]:
        fout = out.fcos
        original_sizes = original_sizes or fout.image_sizes
        dets = self.fcos.decode(fout)
        quirk = self.cfg.meinst.paste_in_clipped_box
        return [
            finalize_with_masks(d, probs, in_size, orig, quirk)
            for d, probs, in_size, orig in zip(dets, self.mask_probs(dets), fout.image_sizes, original_sizes)
        ]

    def prepare(self, dataset, log=print) -> None:
        """Before training: load ``encoding_file`` or fit the encoding on ``dataset``'s annotations (a
        :class:`~blendseg.data.coco.CocoInstances`) when the model has none yet."""
        c = self.cfg.meinst
        if c.encoding == "none" or self.mask_encoding.fitted:
            return
        if c.encoding_file:
            comps, ev, mean = load_encoding_file(c.encoding_file)
            self.mask_encoding.load_fit(comps, ev, mean)
            log(f"MEInst: mask encoding loaded from {c.encoding_file}")
            return
        from ...data.encoding import fit_encoding
        from ...dist import broadcast_object, is_main_process

        # fitted once, on rank 0, and sent to the others (every rank would otherwise read every mask)
        fit = broadcast_object(fit_encoding(dataset, c.dim_mask, c.mask_size, c.sigmoid) if is_main_process() else None)
        self.mask_encoding.load_fit(fit["components"], fit["explained_variance"], fit["mean"])
        log(
            f"MEInst: fitted a {c.dim_mask}-d PCA on {fit['num_masks']} training masks "
            f"(reconstruction mIoU {fit['reconstruction_miou']:.3f})"
        )


def load_encoding_file(path: str) -> tuple[Tensor, Tensor, Tensor]:
    """(components (D, P), explained variances (D,), means (P,)) from AdelaiDet's .npz (``components_c`` ...) or
    from ``blendseg fit-encoding``'s output (.pt, a plain dict of tensors)."""
    if path.endswith(".npz"):
        z = np.load(path)
        return (
            torch.from_numpy(z["components_c"][0]).float(),
            torch.from_numpy(z["explained_variance_c"][0]).float(),
            torch.from_numpy(z["mean_c"][0]).float(),
        )
    d = read_weights(path, "PCA encoding file")
    return d["components"].float(), d["explained_variance"].float(), d["mean"].float()


def build_meinst(cfg: MEInstConfig) -> MEInst:
    c, f = cfg.meinst, cfg.fcos
    if c.encoding not in ("pca", "implicit", "none"):
        raise ValueError(f"meinst.encoding must be pca, implicit or none, got {c.encoding!r}")
    if c.mask_loss not in ("mse", "l1", "smooth_l1", "cosine"):
        raise ValueError(f"meinst.mask_loss must be mse, l1, smooth_l1 or cosine, got {c.mask_loss!r}")
    out_dim = c.mask_size * c.mask_size if c.encoding == "none" else c.dim_mask
    branch = MaskBranch(
        cfg.fpn.out_channels,
        out_dim,
        c.num_mask_convs,
        f.norm,
        len(f.strides),
        f.use_deformable,
        f.deform_v1,
        c.large_kernel_size if c.mask_pred == "large_kernel" else 0,
    )
    fcos = build_fcos(cfg, embed_head=branch, embed_from="share_tower")
    return MEInst(fcos, PCACodec(c.dim_mask, c.mask_size, c.whiten, c.sigmoid), cfg)
