"""BlendMask on the shared FCOS core: basis module (bottom), attention conv (top, through FCOS's ``embed_head``),
blender losses and mask postprocessing (adelaidet.md §2); with an optional semantic branch (``panoptic_module``,
Panoptic FPN's) the panoptic BlendMask of the paper's §4.4 (adelaidet.md §2.6).

Shape legend: N images, K bases, M attention size, R bottom resolution, Q positives, G ground-truth instances,
D detections, C classes, F FPN channels, S semantic classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import BlendMaskConfig, BlendMaskHeadConfig
from ...ops.blend import assemble, blend, pool_bases
from ...ops.losses import cross_entropy
from ...ops.masks import instance_mask_targets, thing_semantic_map
from ...structures import ImageBatch, targets_to
from ..core.fcos import FCOS, build_fcos
from ..core.fcos_inference import Detections, finalize_with_masks
from ..core.fcos_loss import flatten_levels
from ..core.fcos_types import FCOSOutput
from .blendmask_bottom import BOTTOM_MODULES, ProtoNet
from .blendmask_panoptic import SemSegFPNHead, panoptic_postprocess, semantic_seg_loss


class TopLayer(nn.Conv2d):
    """The attention conv: one 3x3 conv on the box tower of every level (K*M*M outputs)."""

    def forward(self, x: Tensor, level: int = 0) -> Tensor:
        return super().forward(x)


@dataclass
class BlendMaskOutput:
    """FCOS outputs (attentions in ``fcos.embeds``), the bases (N, K, Hp/4, Wp/4), the basis module's "thing"
    logits (training only), the semantic branch's logits (N, S, Hp/4, Wp/4) of panoptic models and, with targets,
    every loss."""

    fcos: FCOSOutput
    bases: Tensor
    sem_logits: Tensor | None = None
    panoptic_logits: Tensor | None = None
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
    # index_select, not [gt_inds]: the indexing backward adds repeated rows with atomics on a multi-threaded CPU, in
    # whatever order the threads run (two same-seed runs drifted apart); index_add adds them in order
    rois = pool_bases(out.bases, gt_boxes, gt_img, R, cfg.bases_stride, cfg.bottom_sampling).index_select(0, gt_inds)
    logits = merge(rois, attns, cfg)  # (Q, R, R)
    gt_masks = torch.cat([instance_mask_targets(tg, R) for tg in targets])[gt_inds]
    bce = F.binary_cross_entropy_with_logits(logits, gt_masks, reduction="none").mean(dim=(1, 2))
    return (bce * t.ctr_targets).sum() / t.loss_denorm * cfg.instance_loss_weight + keep_graph


def merge(rois: Tensor, attns: Tensor | None, cfg: BlendMaskHeadConfig) -> Tensor:
    """(N, R, R) mask logits of the configured merger: the blender, or the assembler (no attentions)."""
    return assemble(rois) if cfg.blender == "assembler" else blend(rois, attns, cfg.top_interp)


def basis_semantic_loss(sem_logits: Tensor, targets: list[dict[str, Tensor]], padded: tuple[int, int]) -> Tensor:
    """Cross-entropy (mean over all pixels) of the semantic logits against the "thing" map, padded with background
    and downsampled to the logits (x1/8 on P3) by nearest (AdelaiDet ``loss_basis_sem``).

    The map is the target's ``sem_seg`` (H, W) when the data pipeline made it (every annotation in JSON order, crowd
    included, as the reference's .npz files); otherwise it is painted from the instance masks."""
    maps = []
    for tg in targets:
        if "sem_seg" in tg:
            sem = tg["sem_seg"].long()
            maps.append(F.pad(sem, (0, padded[1] - sem.shape[1], 0, padded[0] - sem.shape[0])))
        else:
            maps.append(thing_semantic_map(tg["masks"], tg["labels"], padded))
    maps = torch.stack(maps)
    maps = F.interpolate(maps[:, None].float(), size=sem_logits.shape[-2:], mode="nearest")[:, 0].long()
    return cross_entropy(sem_logits, maps)


class BlendMask(nn.Module):
    """BlendMask: ``forward(images, targets=None) -> BlendMaskOutput`` (losses iff targets, targets need
    ``masks`` (M, H, W)); ``postprocess(out, original_sizes)`` -> Detections with ``masks`` (D, H, W) bool.

    With a ``panoptic_module`` (:class:`SemSegFPNHead`) it is panoptic BlendMask: targets carrying
    ``panoptic_sem`` (H, W: 0 things, 1..S stuff, 255 void) add ``loss_sem_seg``, and every postprocessed
    ``Detections`` carries its image's ``panoptic`` result (semantic argmax, then the combine heuristic).
    """

    def __init__(
        self, fcos: FCOS, basis_module: nn.Module, cfg: BlendMaskConfig, panoptic_module: SemSegFPNHead | None = None
    ) -> None:
        super().__init__()
        self.fcos = fcos
        self.basis_module = basis_module
        self.panoptic_module = panoptic_module
        self.cfg = cfg

    def forward(self, images: ImageBatch | list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        fout = self.fcos(images, targets)
        c = self.cfg.blendmask
        feats = [fout.features[name] for name in c.bottom_in_features]
        bases, sem = self.basis_module(feats, semantic=targets is not None and c.basis_loss_on)
        out = BlendMaskOutput(fout, bases, sem)
        if self.panoptic_module is not None and (targets is None or all("panoptic_sem" in t for t in targets)):
            out.panoptic_logits = self.panoptic_module([fout.features[n] for n in self.cfg.panoptic.in_features])
        if targets is not None:
            targets = targets_to(targets, bases.device)
            out.losses = dict(fout.losses)
            out.losses["loss_mask"] = blendmask_mask_loss(out, targets, c)
            if sem is not None:
                h, w = fout.features["res2"].shape[-2:]  # stride 4 of the padded batch
                padded = (h * 4, w * 4)
                out.losses["loss_basis_sem"] = basis_semantic_loss(sem, targets, padded) * c.basis_loss_weight
            if out.panoptic_logits is not None and all("panoptic_sem" in t for t in targets):
                p = self.cfg.panoptic
                loss = semantic_seg_loss(
                    out.panoptic_logits, [t["panoptic_sem"] for t in targets], p.common_stride, p.ignore_value
                )
                out.losses["loss_sem_seg"] = loss * p.loss_weight
        return out

    def freeze_unused(self, dataset, log=print) -> None:
        """Before training: the panoptic head gets no loss from data without panoptic targets
        (``data.with_panoptic=false``): it is frozen and not run, and so are the FPN levels only it reads (P2), so
        that DDP meets no parameter without a gradient."""
        if self.panoptic_module is None or getattr(dataset, "with_panoptic_sem", False):
            return
        self.panoptic_module.requires_grad_(False)
        c = self.cfg
        alone = [
            n
            for n in c.panoptic.in_features
            if n not in c.blendmask.bottom_in_features and 2 ** int(n[1:]) not in c.fcos.strides
        ]
        for name in alone:
            for part in ("fpn_lateral", "fpn_output"):
                getattr(self.fcos.fpn, f"{part}{name[1:]}").requires_grad_(False)
        log(
            f"panoptic head{' and FPN ' + ', '.join(alone) if alone else ''} frozen: the training data gives them "
            "no loss (data.with_panoptic=false)"
        )

    @torch.no_grad()
    def mask_logits(self, bases: Tensor, dets: list[Detections]) -> list[Tensor]:
        """Per image (D, R, R) mask logits from the unclipped detection boxes (the reference pools with those)."""
        return [self.image_mask_logits(bases[i : i + 1], d.boxes, d.embeds) for i, d in enumerate(dets)]

    def image_mask_logits(self, bases: Tensor, boxes: Tensor, attns: Tensor | None) -> Tensor:
        """(D, R, R) mask logits of one image's bases (1, K, H, W), unclipped boxes (D, 4) and attentions (D, E)."""
        c = self.cfg.blendmask
        idx = torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
        rois = pool_bases(bases, boxes, idx, c.bottom_resolution, c.bases_stride, c.bottom_sampling)
        return merge(rois, attns, c)

    @torch.no_grad()
    def postprocess(
        self, out: BlendMaskOutput, original_sizes: list[tuple[int, int]] | None = None
    ) -> list[Detections]:
        """Boxes as FCOS; masks = sigmoid(blend) pasted at threshold 0.5 into the *clipped* boxes (reference quirk:
        the mask was computed for the unclipped box), or into the unclipped ones with ``paste_in_clipped_box=False``.
        Panoptic models also fill each image's ``panoptic`` (:class:`~blendseg.structures.PanopticResult`)."""
        fout = out.fcos
        original_sizes = original_sizes or fout.image_sizes
        dets = self.fcos.decode(fout)
        results = []
        clipped_quirk = self.cfg.blendmask.paste_in_clipped_box
        for d, logits, in_size, orig in zip(dets, self.mask_logits(out.bases, dets), fout.image_sizes, original_sizes):
            results.append(finalize_with_masks(d, logits.sigmoid(), in_size, orig, clipped_quirk))
        if out.panoptic_logits is not None:
            p = self.cfg.panoptic
            for i, (d, in_size, orig) in enumerate(zip(results, fout.image_sizes, original_sizes)):
                d.panoptic = panoptic_postprocess(
                    out.panoptic_logits[i],
                    in_size,
                    orig,
                    d.masks,
                    d.scores,
                    d.labels,
                    p.common_stride,
                    p.instances_confidence_thresh,
                    p.overlap_thresh,
                    p.stuff_area_limit,
                )
        return results


def build_blendmask(cfg: BlendMaskConfig) -> BlendMask:
    c = cfg.blendmask
    if c.blender not in ("blend", "assembler"):
        raise ValueError(f"blender must be 'blend' or 'assembler', got {c.blender!r}")
    top_layer = None
    if c.blender == "blend":  # the assembler has fixed attentions: no top layer
        top_layer = TopLayer(cfg.fpn.out_channels, c.num_bases * c.attn_size * c.attn_size, 3, padding=1)
        nn.init.normal_(top_layer.weight, std=0.01)
        nn.init.zeros_(top_layer.bias)
    fcos = build_fcos(cfg, embed_head=top_layer)
    if c.bottom_module not in BOTTOM_MODULES:
        raise ValueError(f"bottom_module must be one of {sorted(BOTTOM_MODULES)}, got {c.bottom_module!r}")
    channels, strides = {**fcos.backbone.out_channels}, {**fcos.backbone.strides}
    for stride in fcos.fpn.strides:
        level = f"p{stride.bit_length() - 1}"
        channels[level], strides[level] = fcos.fpn.out_channels, stride
    missing = [n for n in c.bottom_in_features if n not in channels]
    if missing:
        raise ValueError(f"bottom_in_features {missing} are not produced; available: {sorted(channels)}")
    kind = BOTTOM_MODULES[c.bottom_module]
    stride = strides[c.bottom_in_features[0]] // kind.upsample
    if stride != c.bases_stride:
        raise ValueError(
            f"bases_stride is {c.bases_stride}, but {c.bottom_module} on {c.bottom_in_features} gives stride {stride}"
        )
    extra = {"num_convs": c.basis_num_convs} if kind is ProtoNet else {"aspp_rates": c.aspp_rates}
    basis = kind(
        [channels[n] for n in c.bottom_in_features],
        num_bases=c.num_bases,
        convs_dim=c.basis_convs_dim,
        norm=c.basis_norm,
        num_classes=cfg.fcos.num_classes,
        semantic=c.basis_loss_on,
        **extra,
    )
    return BlendMask(fcos, basis, cfg, build_panoptic_module(cfg, channels, strides))


def build_panoptic_module(
    cfg: BlendMaskConfig, channels: dict[str, int], strides: dict[str, int]
) -> SemSegFPNHead | None:
    """The semantic branch of ``cfg.panoptic`` on the named maps, or None when panoptic is off."""
    p = cfg.panoptic
    if not p.enabled:
        return None
    missing = [n for n in p.in_features if n not in channels]
    if missing:
        raise ValueError(
            f"panoptic.in_features {missing} are not produced (P2 needs res2 in fpn.in_features); "
            f"available: {sorted(channels)}"
        )
    return SemSegFPNHead(
        list(p.in_features),
        [channels[n] for n in p.in_features],
        [strides[n] for n in p.in_features],
        p.num_classes,
        p.convs_dim,
        p.common_stride,
        p.norm,
    )
