"""BlendMask on the shared FCOS core: basis module (bottom), attention conv (top, through FCOS's ``embed_head``),
blender losses and mask postprocessing (adelaidet.md §2).

Shape legend: N images, K bases, M attention size, R bottom resolution, Q positives, G ground-truth instances,
D detections, C classes, F FPN channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import BlendMaskConfig, BlendMaskHeadConfig
from ..ops.blend import assemble, blend, pool_bases
from ..ops.masks import crop_and_resize_masks, paste_masks_in_image, thing_semantic_map
from ..structures import ImageBatch
from .backbone import get_norm
from .fcos import FCOS, FCOSOutput, build_fcos
from .fcos_inference import Detections, rescale_and_clip
from .fcos_loss import flatten_levels


def _conv_block(cin: int, cout: int, norm: str) -> nn.Sequential:
    """3x3 conv (no bias, kaiming_uniform a=1) -> norm -> ReLU (AdelaiDet conv_with_kaiming_uniform)."""
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return nn.Sequential(conv, get_norm(norm, cout), nn.ReLU())


class BasisModule(nn.Module):
    """AdelaiDet's "ProtoNet" bottom module: K bases at stride 4 from P3-P5, and the auxiliary semantic head.

    Args:
        in_channels: FPN width F; ``num_inputs``: how many FPN levels are fused (P3, P4, P5).
        num_bases: K. ``convs_dim``: tower width. ``num_convs``: tower convs before the x2 upsampling.
        num_classes: C; the semantic head predicts C + 1 (background 0) on P3 when ``semantic`` is True.
    """

    def __init__(
        self, in_channels: int, num_inputs: int, num_bases: int = 4, convs_dim: int = 128, num_convs: int = 3,
        norm: str = "SyncBN", num_classes: int = 80, semantic: bool = True,
    ) -> None:  # fmt: skip
        super().__init__()
        self.refine = nn.ModuleList([_conv_block(in_channels, convs_dim, norm) for _ in range(num_inputs)])
        layers: list[nn.Module] = [_conv_block(convs_dim, convs_dim, norm) for _ in range(num_convs)]
        layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
        layers += [_conv_block(convs_dim, convs_dim, norm), nn.Conv2d(convs_dim, num_bases, 1)]
        self.tower = nn.Sequential(*layers)
        self.seg_head = None
        if semantic:
            self.seg_head = nn.Sequential(
                nn.Conv2d(in_channels, convs_dim, 3, padding=1, bias=False), nn.BatchNorm2d(convs_dim), nn.ReLU(),
                nn.Conv2d(convs_dim, convs_dim, 3, padding=1, bias=False), nn.BatchNorm2d(convs_dim), nn.ReLU(),
                nn.Conv2d(convs_dim, num_classes + 1, 1),
            )  # fmt: skip

    def forward(self, feats: list[Tensor], semantic: bool = False) -> tuple[Tensor, Tensor | None]:
        """feats: P3.. (N, F, H_l, W_l). Returns bases (N, K, 2*H_3, 2*W_3) and semantic logits on P3 or None."""
        x = self.refine[0](feats[0])
        for refine, f in zip(self.refine[1:], feats[1:]):
            x = x + F.interpolate(refine(f), size=x.shape[-2:], mode="bilinear", align_corners=False)
        sem = self.seg_head(feats[0]) if (semantic and self.seg_head is not None) else None
        return self.tower(x), sem


@dataclass
class BlendMaskOutput:
    """FCOS outputs (attentions in ``fcos.embeds``), the bases and, with targets, every loss."""

    fcos: FCOSOutput
    bases: Tensor
    sem_logits: Tensor | None = None
    losses: dict[str, Tensor] = field(default_factory=dict)


def blendmask_mask_loss(out: BlendMaskOutput, targets: list[dict[str, Tensor]], cfg: BlendMaskHeadConfig) -> Tensor:
    """Blender loss: GT boxes pool the bases, every FCOS positive blends its attention with the pooled bases of its
    matched GT; per-pixel BCE mean over R x R, x centerness target, summed, / the FCOS box-loss normaliser."""
    t = out.fcos.targets
    R = cfg.bottom_resolution
    gt_boxes = torch.cat([tg["boxes"] for tg in targets])  # (G, 4)
    gt_img = torch.cat([torch.full((len(tg["boxes"]),), i, device=gt_boxes.device) for i, tg in enumerate(targets)])
    attns = flatten_levels(out.fcos.embeds)[t.pos_inds] if out.fcos.embeds is not None else None  # (Q, K*M*M)
    keep_graph = out.bases.sum() * 0 + (attns.sum() * 0 if attns is not None else 0)
    if t.pos_inds.numel() == 0:
        return keep_graph
    gt_inds = t.gt_inds[t.pos_inds]
    rois = pool_bases(out.bases, gt_boxes, gt_img, R, cfg.bases_stride, cfg.bottom_sampling)[gt_inds]  # (Q,K,R,R)
    logits = merge(rois, attns, cfg)  # (Q, R, R)
    gt_masks = torch.cat([crop_and_resize_masks(tg["masks"], tg["boxes"], R) for tg in targets])[gt_inds]
    bce = F.binary_cross_entropy_with_logits(logits, gt_masks, reduction="none").mean(dim=(1, 2))
    return (bce * t.ctr_targets).sum() / t.loss_denorm * cfg.instance_loss_weight + keep_graph


def merge(rois: Tensor, attns: Tensor | None, cfg: BlendMaskHeadConfig) -> Tensor:
    """(N, R, R) mask logits of the configured merger: the blender, or the assembler (no attentions)."""
    return assemble(rois) if cfg.blender == "assembler" else blend(rois, attns, cfg.top_interp)


def basis_semantic_loss(sem_logits: Tensor, targets: list[dict[str, Tensor]], padded: tuple[int, int]) -> Tensor:
    """Cross-entropy (mean over all pixels) of the P3 semantic logits against the "thing" map built on the fly from
    the instance masks, padded with background and downsampled x1/8 by nearest (AdelaiDet ``loss_basis_sem``)."""
    maps = torch.stack([thing_semantic_map(tg["masks"], tg["labels"], padded) for tg in targets])
    maps = F.interpolate(maps[:, None].float(), size=sem_logits.shape[-2:], mode="nearest")[:, 0].long()
    return F.cross_entropy(sem_logits, maps)


class BlendMask(nn.Module):
    """BlendMask: ``forward(images, targets=None) -> BlendMaskOutput`` (losses iff targets, targets need
    ``masks`` (M, H, W)); ``postprocess(out, original_sizes)`` -> Detections with ``masks`` (D, H, W) bool."""

    def __init__(self, fcos: FCOS, basis_module: BasisModule, cfg: BlendMaskConfig) -> None:
        super().__init__()
        self.fcos = fcos
        self.basis_module = basis_module
        self.cfg = cfg

    def forward(self, images: ImageBatch | list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        fout = self.fcos(images, targets)
        c = self.cfg.blendmask
        bases, sem = self.basis_module(fout.features[:3], semantic=targets is not None and c.basis_loss_on)
        out = BlendMaskOutput(fout, bases, sem)
        if targets is not None:
            targets = [{k: v.to(bases.device) for k, v in tg.items()} for tg in targets]
            out.losses = dict(fout.losses)
            out.losses["loss_mask"] = blendmask_mask_loss(out, targets, c)
            if sem is not None:
                padded = tuple(s * self.fcos.strides[0] for s in fout.features[0].shape[-2:])
                out.losses["loss_basis_sem"] = basis_semantic_loss(sem, targets, padded) * c.basis_loss_weight
        return out

    @torch.no_grad()
    def mask_logits(self, bases: Tensor, dets: list[Detections]) -> list[Tensor]:
        """Per image (D, R, R) mask logits from the unclipped detection boxes (the reference pools with those)."""
        c = self.cfg.blendmask
        out = []
        for i, d in enumerate(dets):
            idx = torch.zeros_like(d.labels)
            rois = pool_bases(bases[i : i + 1], d.boxes, idx, c.bottom_resolution, c.bases_stride, c.bottom_sampling)
            out.append(merge(rois, d.embeds, c))
        return out

    @torch.no_grad()
    def postprocess(
        self, out: BlendMaskOutput, original_sizes: list[tuple[int, int]] | None = None
    ) -> list[Detections]:
        """Boxes as FCOS; masks = sigmoid(blend) pasted at threshold 0.5 into the *clipped* boxes (reference quirk:
        the mask was computed for the unclipped box), or into the unclipped ones with ``paste_in_clipped_box=False``."""
        fout = out.fcos
        original_sizes = original_sizes or fout.image_sizes
        dets = self.fcos.decode(fout)
        results = []
        for d, logits, in_size, orig in zip(dets, self.mask_logits(out.bases, dets), fout.image_sizes, original_sizes):
            scaled, clipped, keep = rescale_and_clip(d.boxes, in_size, orig)
            final = d[keep]
            final.boxes = clipped[keep]
            paste_boxes = final.boxes if self.cfg.blendmask.paste_in_clipped_box else scaled[keep]
            final.masks = paste_masks_in_image(logits[keep].sigmoid(), paste_boxes, orig)
            results.append(final)
        return results


def build_blendmask(cfg: BlendMaskConfig) -> BlendMask:
    c = cfg.blendmask
    if c.blender not in ("blend", "assembler"):
        raise ValueError(f"blender must be 'blend' or 'assembler', got {c.blender!r}")
    top_layer = None
    if c.blender == "blend":  # the assembler has fixed attentions: no top layer
        top_layer = nn.Conv2d(cfg.fpn.out_channels, c.num_bases * c.attn_size * c.attn_size, 3, padding=1)
        nn.init.normal_(top_layer.weight, std=0.01)
        nn.init.zeros_(top_layer.bias)
    fcos = build_fcos(cfg, embed_head=top_layer)
    basis = BasisModule(
        cfg.fpn.out_channels, 3, c.num_bases, c.basis_convs_dim, c.basis_num_convs, c.basis_norm,
        cfg.fcos.num_classes, c.basis_loss_on,
    )  # fmt: skip
    return BlendMask(fcos, basis, cfg)
