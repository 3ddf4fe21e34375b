"""FCOS, the shared one-stage core: head modules, the detector and its builder (adelaidet.md §1).

Targets and losses are in ``fcos_loss.py``, decoding in ``fcos_inference.py``. The one extension point is an
``embed_head(x, level)`` applied at every level to the box tower's output (BlendMask's attentions) or, with
``embed_from="share_tower"``, to the shared feature the towers start from (MEInst's parallel mask tower): its
per-location outputs come back in ``FCOSOutput.embeds``, the matched GT of every positive in
``FCOSOutput.targets`` and the kept candidates' embeddings in the decoded detections. An embed head that ends in one
stride-1 conv (BlendMask's 784-channel attention conv; MEInst's code conv after its mask tower) runs that conv at
inference at the kept locations only: ``FCOSOutput.embeds`` is then None and ``embed_inputs`` holds its input
maps.

Shape legend: N images, C classes, F channels, E embedding size, H x W level size, L levels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import FCOSDetectorConfig
from ...ops.conv import conv_at
from ...structures import ImageBatch, normalize_batch, pad_images, targets_to
from .backbones import build_backbone
from .fcos_inference import Detections, detector_postprocess, fcos_decode
from .fcos_loss import compute_locations, fcos_losses, fcos_targets
from .fcos_types import FCOSOutput
from .fpn import FPN
from .layers import get_norm


class Scale(nn.Module):
    """Learnable scalar multiplier (one per FPN level)."""

    def __init__(self, init_value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([init_value]))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class DeformConv(nn.Module):
    """Weights of a 3x3 deformable conv (``conv`` of AdelaiDet's DFConv2d): ``forward(x, offset, mask)``."""

    def __init__(self, in_ch: int, out_ch: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_ch, in_ch, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=1)
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None) -> Tensor:
        from .layers import deform_conv2d_fp32

        return deform_conv2d_fp32(x, offset, self.weight, self.bias, padding=1, mask=mask)


class DFConv2d(nn.Module):
    """AdelaiDet ``DFConv2d``: an ``offset`` conv (27 channels, modulated DCNv2; 18 for DCNv1) and a deformable
    ``conv``. FCOS uses DCNv2 with bias; MEInst's "DCNv1" has no bias."""

    def __init__(self, in_ch: int, out_ch: int, modulated: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.modulated = modulated
        self.offset = nn.Conv2d(in_ch, 27 if modulated else 18, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv(in_ch, out_ch, bias)

    def forward(self, x: Tensor) -> Tensor:
        om = self.offset(x)
        if self.modulated:
            return self.conv(x, om[:, :18], om[:, 18:].sigmoid())
        return self.conv(x, om, None)


def make_tower(
    num_convs: int, channels: int, norm: str, num_levels: int, deform_last: bool, dcn_v1: bool = False
) -> nn.Sequential:
    """[conv, norm, ReLU] x n with detectron2's indices (0 conv, 1 norm, 2 ReLU, ...); the last conv deformable
    with ``deform_last`` (DCNv2 with bias, or DCNv1 without with ``dcn_v1``).

    BN/SyncBN are per level (a ModuleList indexed by level), as AdelaiDet's ``ModuleListDial``.
    """
    layers: list[nn.Module] = []
    for i in range(num_convs):
        if deform_last and i == num_convs - 1:
            layers.append(DFConv2d(channels, channels, modulated=not dcn_v1, bias=not dcn_v1))
        else:
            layers.append(nn.Conv2d(channels, channels, 3, padding=1, bias=True))
        if norm in ("BN", "SyncBN"):
            layers.append(nn.ModuleList([get_norm(norm, channels) for _ in range(num_levels)]))
        elif norm not in ("", "none"):
            layers.append(get_norm(norm, channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def run_tower(tower: nn.Sequential, x: Tensor, level: int) -> Tensor:
    for layer in tower:
        x = layer[level](x) if isinstance(layer, nn.ModuleList) else layer(x)
    return x


class FCOSHead(nn.Module):
    """Shared / class / box towers and the class, box and quality predictors, applied to every level.

    Args:
        in_channels: FPN width F.
        num_classes: C foreground classes (sigmoid, no background channel).
        num_levels: L, needed for per-level BN.
        embed_head: optional module ``(x (N, F, H, W), level) -> (N, E, H, W)``; ``embed_from``: "box_tower" (its
            input is the box tower's output) or "share_tower" (the shared feature, a tower of its own beside cls/box).
        deform_v1: the deformable last tower convs are DCNv1 without bias (MEInst) instead of DCNv2 with bias.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_levels: int,
        num_cls_convs: int = 4,
        num_box_convs: int = 4,
        num_share_convs: int = 0,
        norm: str = "GN",
        prior_prob: float = 0.01,
        use_scale: bool = True,
        use_deformable: bool = False,
        embed_head: nn.Module | None = None,
        embed_from: str = "box_tower",
        deform_v1: bool = False,
    ) -> None:
        super().__init__()
        if embed_from not in ("box_tower", "share_tower"):
            raise ValueError(f"embed_from must be 'box_tower' or 'share_tower', got {embed_from!r}")
        self.embed_from = embed_from
        self.share_tower = make_tower(num_share_convs, in_channels, norm, num_levels, False)
        self.cls_tower = make_tower(num_cls_convs, in_channels, norm, num_levels, use_deformable, deform_v1)
        self.bbox_tower = make_tower(num_box_convs, in_channels, norm, num_levels, use_deformable, deform_v1)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.ctrness = nn.Conv2d(in_channels, 1, 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)]) if use_scale else None
        for module in (
            self.share_tower,
            self.cls_tower,
            self.bbox_tower,
            self.cls_logits,
            self.bbox_pred,
            self.ctrness,
        ):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.normal_(m.weight, std=0.01)
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior_prob) / prior_prob))
        self.embed_head = embed_head

    @property
    def embed_conv(self) -> nn.Conv2d | None:
        """The embed head's last layer when it is one stride-1 conv that inference can run at the kept locations
        only: the head itself when it is a conv (BlendMask's attentions), else its ``last_conv`` (MEInst's
        ``mask_pred``; None with the large-kernel predictor). An embed head with a ``last_conv`` also has
        ``trunk(x, level)``, the layers before it: ``embed_head(x, level) == last_conv(trunk(x, level))``."""
        e = self.embed_head
        conv = e if isinstance(e, nn.Conv2d) else getattr(e, "last_conv", None)
        if isinstance(conv, nn.Conv2d) and conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1:
            return conv
        return None

    @property
    def defers_embeds(self) -> bool:
        """Whether inference makes the embeddings at the kept locations only (:meth:`embeds_at`) instead of at
        every location of every level (see :attr:`embed_conv`)."""
        return self.embed_conv is not None

    def embed_trunk(self, x: Tensor, level: int) -> Tensor:
        """The embed head up to its :attr:`embed_conv` (the identity when the head is that conv)."""
        return x if isinstance(self.embed_head, nn.Conv2d) else self.embed_head.trunk(x, level)

    def embeds_at(self, maps: list[Tensor], loc_inds: Tensor) -> Tensor:
        """(D, E) the embed head's outputs at D locations of one image: ``maps`` are the per-level inputs of its
        :attr:`embed_conv` (F, H, W), ``loc_inds`` indices among the image's locations of all levels (level-major,
        as ``Detections.loc_inds``). Equal to the dense embeddings gathered there, up to summation order."""
        conv = self.embed_conv
        return conv_at(maps, loc_inds, conv.weight, conv.bias, conv.padding[0])

    def forward(
        self, feats: list[Tensor], dense_embeds: bool = True
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor] | None]:
        """feats: L maps (N, F, H, W). Returns per level logits (N, C, H, W), box regression (N, 4, H, W) in
        stride units after ReLU, quality logits (N, 1, H, W) and embeddings (N, E, H, W) or None. With
        ``dense_embeds=False`` and an embed head that :attr:`defers_embeds`, the last item is the per-level inputs
        of its :attr:`embed_conv` (N, F', H, W) instead, for :meth:`embeds_at`."""
        defer = not dense_embeds and self.defers_embeds
        logits, box_reg, quality, embeds = [], [], [], []
        for lvl, x in enumerate(feats):
            x = run_tower(self.share_tower, x, lvl)
            cls_t = run_tower(self.cls_tower, x, lvl)
            box_t = run_tower(self.bbox_tower, x, lvl)
            logits.append(self.cls_logits(cls_t))
            quality.append(self.ctrness(box_t))
            reg = self.bbox_pred(box_t)
            if self.scales is not None:
                reg = self.scales[lvl](reg)
            box_reg.append(F.relu(reg))
            if self.embed_head is not None:
                src = box_t if self.embed_from == "box_tower" else x
                embeds.append(self.embed_trunk(src, lvl) if defer else self.embed_head(src, lvl))
        return logits, box_reg, quality, (embeds if self.embed_head is not None else None)


class FCOS(nn.Module):
    """FCOS detector: backbone (ResNet, DLA, DarkNet) -> FPN -> FCOSHead, with targets, losses and decoding from
    ``fcos_*`` functions.

    ``forward(images, targets=None)`` returns an :class:`FCOSOutput`; its ``losses`` are filled exactly when
    ``targets`` are given, whatever ``self.training`` is. ``postprocess(out, original_sizes)`` returns per
    image ``Detections`` (boxes xyxy at the original size, scores, labels) with no gradient.

    Example::

        model = build_fcos(fcos_tiny().model)
        out = model([torch.rand(3, 128, 160) * 255])
        dets = model.postprocess(out, [(256, 320)])
    """

    def __init__(self, backbone: nn.Module, fpn: FPN, head: FCOSHead, cfg: FCOSDetectorConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.head = head
        self.cfg = cfg
        self.strides = list(cfg.fcos.strides)
        if self.strides != fpn.strides[len(fpn.strides) - len(self.strides) :]:
            raise ValueError(f"fcos.strides {self.strides} are not the coarsest levels of the FPN's {fpn.strides}")
        self.in_features = list(cfg.fpn.in_features)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std, dtype=torch.float32), persistent=False)
        # EMA of the positive count for loss_normalizer_cls="moving_fg"; not saved, as in AdelaiDet
        self.register_buffer("moving_num_fg", torch.tensor(100.0), persistent=False)

    def preprocess(self, images: ImageBatch | list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        if not isinstance(images, ImageBatch):
            images = pad_images(list(images), self.cfg.size_divisibility)
        images = images.to(self.pixel_mean.device)
        x = normalize_batch(images, self.pixel_mean, self.pixel_std, self.cfg.input_format == "BGR")
        return x, images.image_sizes

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """Backbone maps ``res2``..``res5`` and FPN maps ``p<level>``, by name."""
        feats = self.backbone(x)
        pyramid = self.fpn([feats[n] for n in self.in_features])
        return {**feats, **{f"p{int(s).bit_length() - 1}": p for s, p in zip(self.fpn.strides, pyramid)}}

    def forward(self, images: ImageBatch | list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> FCOSOutput:
        x, image_sizes = self.preprocess(images)
        named = self.features(x)
        feats = [named[f"p{int(s).bit_length() - 1}"] for s in self.strides]
        defer = targets is None and self.head.defers_embeds  # the loss needs them at every positive
        logits, box_reg, quality, embeds = self.head(feats, dense_embeds=not defer)
        locations = compute_locations(feats, self.strides)
        out = FCOSOutput(logits, box_reg, quality, None if defer else embeds, locations, image_sizes, named)
        out.embed_inputs = embeds if defer else None
        if targets is not None:
            c = self.cfg.fcos
            targets = targets_to(targets, x.device)
            out.targets = fcos_targets(
                locations,
                self.strides,
                targets,
                c.num_classes,
                c.sizes_of_interest,
                c.center_sample,
                c.pos_radius,
            )
            out.losses = fcos_losses(out, out.targets, c, self.moving_num_fg)
        return out

    @torch.no_grad()
    def decode(self, out: FCOSOutput) -> list[Detections]:
        """Detections in input-image pixels (unclipped boxes), with locations, levels and embeddings."""
        c = self.cfg.fcos
        dets = fcos_decode(
            out.logits,
            out.box_reg,
            out.quality,
            out.embeds,
            out.locations,
            self.strides,
            c.inference_th,
            c.pre_nms_topk,
            c.nms_th,
            c.post_nms_topk,
            c.thresh_with_ctr,
        )
        if out.embed_inputs is not None:
            for i, d in enumerate(dets):
                d.embeds = self.head.embeds_at([x[i] for x in out.embed_inputs], d.loc_inds)
        return dets

    @torch.no_grad()
    def postprocess(self, out: FCOSOutput, original_sizes: list[tuple[int, int]] | None = None) -> list[Detections]:
        """Decoded detections rescaled to ``original_sizes`` (default: input sizes), clipped, empty ones dropped."""
        original_sizes = original_sizes or out.image_sizes
        return [
            detector_postprocess(d, in_size, orig)
            for d, in_size, orig in zip(self.decode(out), out.image_sizes, original_sizes)
        ]


def build_fcos(cfg: FCOSDetectorConfig, embed_head: nn.Module | None = None, embed_from: str = "box_tower") -> FCOS:
    """Build the FCOS detector of ``cfg``; ``embed_head`` / ``embed_from`` are the extension point (see module
    docstring)."""
    backbone = build_backbone(cfg.backbone)
    fpn = FPN(
        [backbone.out_channels[n] for n in cfg.fpn.in_features],
        [backbone.strides[n] for n in cfg.fpn.in_features],
        cfg.fpn.out_channels,
        cfg.fpn.top_levels,
        cfg.fpn.upsample,
        cfg.fpn.relu_outputs,
        cfg.fpn.relu_before_p7,
    )
    c = cfg.fcos
    head = FCOSHead(
        fpn.out_channels,
        c.num_classes,
        len(c.strides),
        c.num_cls_convs,
        c.num_box_convs,
        c.num_share_convs,
        c.norm,
        c.prior_prob,
        c.use_scale,
        c.use_deformable,
        embed_head,
        embed_from,
        c.deform_v1,
    )
    return FCOS(backbone, fpn, head, cfg)
