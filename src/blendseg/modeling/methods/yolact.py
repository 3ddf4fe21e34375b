"""YOLACT / YOLACT++ on the shared backbones and FPN: anchor head shared across levels, protonet, semantic head,
fast mask re-scoring, Fast NMS and crop postprocessing (yolact.md §1, §3). Losses live in ``yolact_loss.py``.

Coordinates inside the model are relative to the network input (x / W, y / H), as the official code.

Shape legend: N images, P priors (all levels, y, x, anchor), A anchors per location, C foreground classes
(softmax over C + 1, background 0), k prototypes, h x w prototype size, D detections.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import YolactConfig
from ...ops.anchors import decode_boxes, make_priors
from ...ops.conv import conv_at
from ...ops.masks import crop_masks
from ...ops.nms import fast_nms, standard_nms
from ...ops.resize import BilinearUpsample
from ...structures import GridMasks, ImageBatch, normalize_batch, pad_images, targets_to
from ..core.backbones import build_backbone
from ..core.fpn import FPN


def _xavier(module: nn.Module) -> None:
    """Official init of every non-backbone conv: xavier_uniform weights, zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class PredictionHead(nn.Module):
    """One 3x3 conv + ReLU (``upfeature``), then box (A*4), class (A*(C+1)) and tanh coefficient (A*k) convs."""

    def __init__(self, channels: int, num_anchors: int, num_classes: int, num_prototypes: int) -> None:
        super().__init__()
        self.num_anchors = num_anchors
        self.upfeature = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.bbox_layer = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.conf_layer = nn.Conv2d(channels, num_anchors * (num_classes + 1), 3, padding=1)
        self.mask_layer = nn.Conv2d(channels, num_anchors * num_prototypes, 3, padding=1)

    def forward(self, x: Tensor, dense_coef: bool = True) -> tuple[Tensor, Tensor, Tensor]:
        """x (N, F, H, W) -> loc (N, H*W*A, 4), conf logits (N, H*W*A, C+1), coefficients (N, H*W*A, k); with
        ``dense_coef=False`` the last item is the ``upfeature`` map (N, F, H, W) instead, for :meth:`coefs_at`."""
        x = self.upfeature(x)
        a = self.num_anchors
        loc, conf = _flat(self.bbox_layer(x), 4), _flat(self.conf_layer(x), self.conf_layer.out_channels // a)
        return loc, conf, (self.coefs(x) if dense_coef else x)

    def coefs(self, up: Tensor) -> Tensor:
        """(N, H*W*A, k) tanh coefficients of every prior of an ``upfeature`` map (N, F, H, W)."""
        return torch.tanh(_flat(self.mask_layer(up), self.mask_layer.out_channels // self.num_anchors))

    def coefs_at(self, maps: list[Tensor], prior_inds: Tensor) -> Tensor:
        """(D, k) the coefficients of D priors of one image (indices into its priors: level-major, then y, x,
        anchor), from the per-level ``upfeature`` maps (F, H, W): the coefficient conv at those locations only,
        equal to the dense coefficients gathered there up to summation order."""
        conv, a = self.mask_layer, self.num_anchors
        loc = prior_inds // a  # a level's priors start at A x the index of its first location
        out = conv_at(maps, loc, conv.weight, conv.bias, conv.padding[0]).view(-1, a, conv.out_channels // a)
        anchor = (prior_inds - loc * a)[:, None, None].expand(-1, 1, out.shape[2])
        return torch.tanh(out.gather(1, anchor)[:, 0])


def _flat(t: Tensor, d: int) -> Tensor:
    """(N, A*d, H, W) -> (N, H*W*A, d), the priors' order."""
    return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1, d)


def protonet(channels: int, width: int, num_convs: int, num_prototypes: int) -> nn.Sequential:
    """3x3 conv+ReLU x n, bilinear x2 + ReLU, 3x3 conv+ReLU, 1x1 to k (official indices 0, 2, 4, 8, 10)."""
    layers: list[nn.Module] = []
    for i in range(num_convs):
        layers += [nn.Conv2d(channels if i == 0 else width, width, 3, padding=1), nn.ReLU(inplace=True)]
    layers += [BilinearUpsample(2), nn.ReLU(inplace=True)]
    layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(width, num_prototypes, 1)]
    return nn.Sequential(*layers)


class FastMaskIoUNet(nn.Module):
    """YOLACT++ re-scoring: 5 stride-2 3x3 convs (8..128) + ReLU, 1x1 to C + ReLU, global max pool -> (D, C)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for cout in (8, 16, 32, 64, 128):
            layers += [nn.Conv2d(cin, cout, 3, stride=2), nn.ReLU()]
            cin = cout
        layers += [nn.Conv2d(cin, num_classes, 1), nn.ReLU()]
        self.maskiou_net = nn.Sequential(*layers)

    def forward(self, masks: Tensor) -> Tensor:
        """masks (D, 1, h, w) cropped sigmoid masks -> (D, C) predicted mask IoU per class. Maps smaller than the
        63 px the five unpadded stride-2 convs need (inputs under ~250 px) are zero-padded (the official crashes)."""
        h, w = masks.shape[-2:]
        if min(h, w) < 63:
            masks = F.pad(masks, (0, max(63 - w, 0), 0, max(63 - h, 0)))
        return self.maskiou_net(masks).amax(dim=(2, 3))


@dataclass
class YolactOutput:
    """Raw outputs for a batch and, with targets, the losses."""

    loc: Tensor  # (N, P, 4) SSD offsets
    conf: Tensor  # (N, P, C+1) logits
    coef: Tensor | None  # (N, P, k) tanh coefficients; None at inference, where only the kept priors' are made
    proto: Tensor  # (N, h, w, k) ReLU prototypes
    priors: Tensor  # (P, 4) relative (cx, cy, w, h)
    image_sizes: list[tuple[int, int]]
    input_size: tuple[int, int]  # (H, W) of the (padded) network input
    sem_logits: Tensor | None = None  # (N, C, H3, W3) in training
    losses: dict[str, Tensor] = field(default_factory=dict)
    coef_inputs: list[Tensor] | None = None  # (N, F, H, W) per level: the coefficient conv's inputs, when deferred

    def coefs_at(self, head: PredictionHead, i: int, prior_inds: Tensor) -> Tensor:
        """(D, k) image ``i``'s coefficients at ``prior_inds``, made now if they were deferred."""
        if self.coef is not None:
            return self.coef[i, prior_inds]
        return head.coefs_at([x[i] for x in self.coef_inputs], prior_inds)

    def dense_coef(self, head: PredictionHead) -> Tensor:
        """(N, P, k) the coefficients of every prior, made now if they were deferred."""
        if self.coef is not None:
            return self.coef
        return torch.cat([head.coefs(x) for x in self.coef_inputs], 1)


@dataclass
class YolactDetections:
    """Detections of one image: boxes (D, 4) xyxy pixels of the original image (truncated to integers, as the
    official postprocess), ``scores`` the class confidence (box AP), ``mask_scores`` (YOLACT++: x predicted mask
    IoU; mask AP), labels (D,), prior indices, coefficients (D, k) and masks (D, H, W) bool (compact, a
    :class:`~blendseg.structures.GridMasks`)."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    prior_inds: Tensor
    coefs: Tensor
    masks: GridMasks | None = None
    mask_scores: Tensor | None = None

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def __getitem__(self, idx: Tensor) -> YolactDetections:
        return YolactDetections(**{f.name: _take(getattr(self, f.name), idx) for f in fields(self)})


def _take(t: Tensor | None, idx: Tensor) -> Tensor | None:
    return None if t is None else t[idx]


class Yolact(nn.Module):
    """YOLACT: ``forward(images, targets=None) -> YolactOutput`` (losses iff targets; targets need ``masks``,
    optionally ``crowd_boxes``); ``postprocess(out, original_sizes)`` -> list of :class:`YolactDetections`.
    Inference makes the mask coefficients of the kept priors only (``defer_coefs``; False: of every prior)."""

    defer_coefs = True

    def __init__(self, backbone: nn.Module, fpn: FPN, cfg: YolactConfig) -> None:
        super().__init__()
        c = cfg.yolact
        self.cfg = cfg
        self.backbone, self.fpn = backbone, fpn
        ch = fpn.out_channels
        self.num_anchors = len(c.scales[0]) * len(c.aspect_ratios)
        self.proto_net = protonet(ch, c.proto_dim, c.proto_num_convs, c.num_prototypes)
        self.prediction_layers = nn.ModuleList([PredictionHead(ch, self.num_anchors, c.num_classes, c.num_prototypes)])
        self.semantic_seg_conv = nn.Conv2d(ch, c.num_classes, 1) if c.semantic_loss else None
        self.maskiou_net = FastMaskIoUNet(c.num_classes) if c.maskiou else None
        for m in (self.fpn, self.proto_net, self.prediction_layers, self.semantic_seg_conv, self.maskiou_net):
            if m is not None:
                _xavier(m)
        self.register_buffer("pixel_mean", torch.tensor(cfg.pixel_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(cfg.pixel_std, dtype=torch.float32), persistent=False)
        self._priors: dict[tuple, Tensor] = {}

    def priors(self, grids: list[tuple[int, int]], input_size: tuple[int, int], device: torch.device) -> Tensor:
        key = (tuple(grids), input_size, str(device))
        if key not in self._priors:
            c = self.cfg.yolact
            self._priors[key] = make_priors(
                grids, [tuple(s) for s in c.scales], c.aspect_ratios, input_size, c.square_anchors
            ).to(device)
        return self._priors[key]

    def forward(self, images: ImageBatch | list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if not isinstance(images, ImageBatch):
            images = pad_images(list(images), self.cfg.size_divisibility)
        images = images.to(self.pixel_mean.device)
        x = normalize_batch(images, self.pixel_mean, self.pixel_std, self.cfg.input_format == "BGR")
        feats = self.backbone(x)
        pyramid = self.fpn([feats[n] for n in self.cfg.fpn.in_features])
        head = self.prediction_layers[0]
        defer = targets is None and self.defer_coefs  # the loss needs every prior's coefficients; decoding the kept's
        loc, conf, coef = zip(*(head(p, dense_coef=not defer) for p in pyramid))
        loc, conf = torch.cat(loc, 1), torch.cat(conf, 1)
        proto = F.relu(self.proto_net(pyramid[0])).permute(0, 2, 3, 1)
        input_size = (int(x.shape[-2]), int(x.shape[-1]))
        priors = self.priors([tuple(p.shape[-2:]) for p in pyramid], input_size, x.device)
        dense = None if defer else torch.cat(coef, 1)
        out = YolactOutput(loc, conf, dense, proto, priors, images.image_sizes, input_size)
        out.coef_inputs = list(coef) if defer else None
        if targets is not None:
            from .yolact_loss import yolact_losses

            if self.semantic_seg_conv is not None:
                out.sem_logits = self.semantic_seg_conv(pyramid[0])
            targets = targets_to(targets, x.device)
            out.losses = yolact_losses(out, targets, self.cfg.yolact, self.maskiou_net)
        return out

    @torch.no_grad()
    def detect(self, out: YolactOutput) -> list[YolactDetections]:
        """Official ``Detect``: decode, pre-filter on max foreground confidence, Fast NMS (or standard), top 100.
        Boxes stay relative and unclipped; masks are not made yet."""
        c = self.cfg.yolact
        results = []
        for i in range(out.loc.shape[0]):
            boxes = decode_boxes(out.loc[i], out.priors, clamp=c.clamp_decode)
            scores = out.conf[i].softmax(-1)[:, 1:].t()  # (C, P)
            keep = scores.amax(0) > c.nms_conf_thresh
            cand = keep.nonzero()[:, 0]
            if c.nms == "fast":
                second = c.nms_conf_thresh if c.second_threshold else None
                sel, labels, s = fast_nms(
                    boxes[cand], scores[:, cand], c.nms_thresh, c.nms_top_k, c.max_num_detections, second
                )
            elif c.nms == "standard":
                sel, labels, s = standard_nms(
                    boxes[cand], scores[:, cand], c.nms_thresh, c.nms_conf_thresh, c.max_num_detections
                )
            else:
                raise ValueError(f"yolact.nms must be 'fast' or 'standard', got {c.nms!r}")
            prior = cand[sel]
            coefs = out.coefs_at(self.prediction_layers[0], i, prior)
            results.append(YolactDetections(boxes[prior], s, labels, prior, coefs))
        return results

    @torch.no_grad()
    def postprocess(
        self, out: YolactOutput, original_sizes: list[tuple[int, int]] | None = None
    ) -> list[YolactDetections]:
        """Official ``postprocess``: score threshold, sigmoid(proto @ coef), crop with the predicted box at proto
        resolution (+1 px), YOLACT++ re-scoring, bilinear upsampling straight to the original size, > 0.5; boxes
        scaled to the original size, ordered, clamped and truncated to integers."""
        c = self.cfg.yolact
        original_sizes = original_sizes or out.image_sizes
        results = []
        H, W = out.input_size
        for i, d in enumerate(self.detect(out)):
            d = d[d.scores > c.score_threshold]
            masks = torch.sigmoid(out.proto[i] @ d.coefs.t()).permute(2, 0, 1)  # (D, h, w)
            if c.crop:
                masks = crop_masks(masks, d.boxes)
            if self.maskiou_net is not None and len(d):
                iou = self.maskiou_net(masks[:, None]).gather(1, d.labels[:, None])[:, 0]
                d.mask_scores = d.scores * iou
            (h, w), (oh, ow) = out.image_sizes[i], original_sizes[i]
            sy, sx = oh / h, ow / w  # input pixels -> original pixels; the whole (padded) input maps to:
            full = (round(H * sy), round(W * sx))
            d.masks = GridMasks(masks, full, (oh, ow))  # upsampled per instance, over its crop only, when asked
            d.boxes = to_pixels(d.boxes, W * sx, H * sy, ow, oh)
            results.append(d)
        return results


def to_pixels(boxes: Tensor, sx: float, sy: float, w: int, h: int) -> Tensor:
    """Relative boxes -> pixels (x * sx), x1 <= x2, clamped to the image, truncated (official sanitize + long)."""
    x1, x2 = boxes[:, 0] * sx, boxes[:, 2] * sx
    y1, y2 = boxes[:, 1] * sy, boxes[:, 3] * sy
    out = torch.stack(
        [
            torch.minimum(x1, x2).clamp(min=0),
            torch.minimum(y1, y2).clamp(min=0),
            torch.maximum(x1, x2).clamp(max=w),
            torch.maximum(y1, y2).clamp(max=h),
        ],
        1,
    )
    return out.long().float()


def build_yolact(cfg: YolactConfig) -> Yolact:
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
    c = cfg.yolact
    if len(c.scales) != len(fpn.strides):
        raise ValueError(f"yolact.scales has {len(c.scales)} levels, the FPN {len(fpn.strides)}")
    if len({len(s) for s in c.scales}) != 1:
        raise ValueError("every level needs the same number of scales (the head is shared)")
    return Yolact(backbone, fpn, cfg)
