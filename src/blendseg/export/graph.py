"""Whole-pipeline graphs for export: one uint8 RGB image in, final detections with full-size masks out.

``ImageGraph(model, cfg, conf, max_det)(image)`` runs, for one (3, H, W) uint8 RGB image of any size, the test-time
resize, normalisation and padding, the network, decoding, NMS, the score threshold and ``max_det``, the mask
assembly (blender / prototypes / PCA decode) and the paste at the original size, returning ``boxes`` (D, 4) float32
xyxy original pixels, ``scores`` (D,), ``labels`` (D,) int64 and ``masks`` (D, H, W) uint8 (none for FCOS), or
with ``dense=False`` the compact masks the PyTorch path keeps.

The model's own pieces are reused (backbone, FPN, heads, bases, blender, PCA codec, Fast NMS, crop); only the glue
that ``torch.export`` cannot follow is written here without Python branches on data: per-level top-k as a masked
``topk``, class-aware NMS by coordinate offsets, the paste as two bilinear weight matrices (the same samples as
``grid_sample``, without a (D, H, W, 2) grid), sizes as symbolic ints. Eager PyTorch runs these modules too: the
tests check them against :class:`~blendseg.inference.predictor.Predictor` and the exported file against them.

Shape legend: H x W input image, h x w resized, Hp x Wp padded, C classes, D detections, S mask size, k prototypes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import TrainConfig
from ..modeling.core.fcos import FCOS
from ..modeling.core.fcos_inference import rescale_and_clip
from ..modeling.core.fcos_loss import compute_locations
from ..modeling.methods.yolact import Yolact, to_pixels
from ..ops.anchors import decode_boxes
from ..ops.masks import crop_masks
from ..ops.nms import fast_nms
from ..zoo.archs import get_arch


class Preprocess(nn.Module):
    """uint8 (3, H, W) -> normalised, zero-padded (1, 3, Hp, Wp) network input and the resized (h, w): the test
    pipeline of ``cfg.data`` (shortest-edge resize with antialiasing, or the YOLACT squash). The eager pipeline
    resizes the uint8 image with fixed-point weights and rounds; here it is float (ONNX Resize has no such kernel),
    so resized pixels differ by up to one grey level. Not rounding keeps onnxruntime and PyTorch within float
    error of each other."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        m, d = cfg.model, cfg.data
        self.square, self.short, self.max_size = d.square_size, d.min_size_test, d.max_size_test
        self.bgr, self.div = m.input_format == "BGR", max(m.size_divisibility, 1)
        self.register_buffer("mean", torch.tensor(m.pixel_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(m.pixel_std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> tuple[Tensor, tuple]:
        x = image[None].float()
        if self.square > 0:
            h = w = self.square
            x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False)
        else:  # detectron2's ResizeShortestEdge without branches (transforms.shortest_edge_size)
            H, W = image.shape[-2], image.shape[-1]
            scale = self.short / torch.sym_min(H, W)
            newh, neww = torch.sym_float(H) * scale, torch.sym_float(W) * scale
            cap = torch.sym_min(self.max_size / torch.sym_max(newh, neww), 1.0)
            h, w = torch.sym_int(newh * cap + 0.5), torch.sym_int(neww * cap + 0.5)
            x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False, antialias=True)
        if self.bgr:
            x = x.flip(1)
        x = (x - self.mean) / self.std
        hp, wp = (h + self.div - 1) // self.div * self.div, (w + self.div - 1) // self.div * self.div
        return F.pad(x, (0, wp - w, 0, hp - h)), (h, w)


def class_aware_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Indices kept by per-class NMS, by descending score: torchvision's coordinate trick (each class shifted
    apart), with no branch on the number of boxes."""
    span = torch.cat([boxes.flatten().abs(), boxes.new_zeros(1)]).max()
    shifted = boxes + (labels.to(boxes.dtype) * (2 * span + 1))[:, None]
    return torch.ops.torchvision.nms(shifted, scores, iou_threshold)


def paste_masks(probs: Tensor, boxes: Tensor, image_size: tuple, threshold: float = 0.5) -> Tensor:
    """(D, H, W) uint8: each (S, S) probability map (D, S, S) pasted into its box (D, 4) xyxy pixels and ``>=
    threshold``: the samples of detectron2's ``grid_sample`` paste (bilinear, align_corners False, zero outside) as
    ``Wy @ probs @ Wx^T`` with tent weights, which is exact because bilinear sampling is separable."""
    H, W = image_size
    S = probs.shape[-1]
    cells = torch.arange(S, device=probs.device, dtype=torch.float32)

    def weights(n, lo: Tensor, hi: Tensor) -> Tensor:  # (D, n, S)
        centres = torch.arange(n, device=probs.device, dtype=torch.float32) + 0.5
        src = (centres[None] - lo[:, None]) / (hi - lo)[:, None] * S - 0.5
        return (1 - (src[:, :, None] - cells).abs()).clamp(min=0)

    wy, wx = weights(H, boxes[:, 1], boxes[:, 3]), weights(W, boxes[:, 0], boxes[:, 2])
    return ((wy @ probs.float() @ wx.transpose(1, 2)) >= threshold).to(torch.uint8)


class FCOSGraph(nn.Module):
    """FCOS detections for one image (:func:`~blendseg.modeling.core.fcos_inference.fcos_decode` and
    ``detector_postprocess``, then ``conf`` and ``max_det``); subclasses add masks through :meth:`mask_probs`."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, conf: float, max_det: int, dense: bool = True) -> None:
        super().__init__()
        self.model, self.preprocess, self.dense = model, Preprocess(cfg), dense
        self.fcos: FCOS = model if isinstance(model, FCOS) else model.fcos
        self.conf, self.max_det = conf, max_det

    def mask_probs(self, feats: dict, embeds: Tensor | None, boxes: Tensor) -> Tensor | None:
        """(D, S, S) mask probabilities of the kept detections (unclipped input-pixel boxes, their embeddings)."""
        return None

    @property
    def paste_in_clipped_box(self) -> bool:
        return True

    def decode(self, logits, box_reg, quality, embeds, locations) -> tuple[Tensor, ...]:
        """fcos_candidates + select_detections for one image: boxes, scores, labels, location indices."""
        c, strides = self.fcos.cfg.fcos, self.fcos.strides
        out, offset = [], 0
        for lvl, (lg, rg, q, loc) in enumerate(zip(logits, box_reg, quality, locations)):
            n_cls = lg.shape[1]
            cls = lg[0].permute(1, 2, 0).reshape(-1, n_cls).sigmoid()  # (HW, C)
            prod = cls * q[0].permute(1, 2, 0).reshape(-1, 1).sigmoid()
            cand = ((prod if c.thresh_with_ctr else cls) > c.inference_th).flatten()
            top, idx = torch.where(cand, prod.flatten(), -1.0).topk(torch.sym_min(c.pre_nms_topk, cand.shape[0]))
            sel = cand[idx].nonzero()[:, 0]
            idx, top = idx[sel], top[sel]
            li = idx // n_cls
            r, p = rg[0].permute(1, 2, 0).reshape(-1, 4)[li] * strides[lvl], loc[li]
            boxes = torch.stack([p[:, 0] - r[:, 0], p[:, 1] - r[:, 1], p[:, 0] + r[:, 2], p[:, 1] + r[:, 3]], 1)
            out.append((boxes, top.sqrt(), idx - li * n_cls, li + offset))
            offset = offset + loc.shape[0]
        boxes, scores, labels, inds = (torch.cat(t) for t in zip(*out))
        keep = class_aware_nms(boxes, scores, labels, c.nms_th)[: c.post_nms_topk]
        return boxes[keep], scores[keep], labels[keep], inds[keep]

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        H, W = image.shape[-2], image.shape[-1]
        x, (h, w) = self.preprocess(image)
        named = self.fcos.features(x)
        feats = [named[f"p{int(s).bit_length() - 1}"] for s in self.fcos.strides]
        head = self.fcos.head
        logits, box_reg, quality, embeds = head(feats, dense_embeds=False)
        locations = compute_locations(feats, self.fcos.strides)
        boxes, scores, labels, inds = self.decode(logits, box_reg, quality, embeds, locations)
        scaled, clipped, nonempty = rescale_and_clip(boxes, (h, w), (H, W))
        keep = (nonempty & (scores >= self.conf)).nonzero()[:, 0][: self.max_det]
        if embeds is None:
            kept = None
        elif head.defers_embeds:  # BlendMask's attention conv, MEInst's code conv: at the kept locations only
            kept = head.embeds_at([e[0] for e in embeds], inds[keep])
        else:
            kept = torch.cat([e[0].flatten(1) for e in embeds], 1)[:, inds[keep]].t()
        probs = self.mask_probs(named, kept, boxes[keep])  # kept: (D, E) embeddings of the kept locations
        if probs is None:
            return clipped[keep], scores[keep], labels[keep]
        paste = clipped[keep] if self.paste_in_clipped_box else scaled[keep]
        if not self.dense:  # compact: (D, S, S) probabilities and their paste boxes (structures.BoxMasks)
            return clipped[keep], scores[keep], labels[keep], probs, paste
        return clipped[keep], scores[keep], labels[keep], paste_masks(probs, paste, (H, W))


class BlendMaskGraph(FCOSGraph):
    """BlendMask: bases pooled with the unclipped boxes, blended with the kept locations' attentions (the
    semantic branch of panoptic models is not exported: instances only)."""

    def mask_probs(self, feats: dict, embeds: Tensor | None, boxes: Tensor) -> Tensor:
        c = self.model.cfg.blendmask
        bases, _ = self.model.basis_module([feats[n] for n in c.bottom_in_features], semantic=False)
        return self.model.image_mask_logits(bases, boxes, embeds).sigmoid()

    @property
    def paste_in_clipped_box(self) -> bool:
        return self.model.cfg.blendmask.paste_in_clipped_box


class MEInstGraph(FCOSGraph):
    """MEInst: the kept locations' codes decoded by the PCA (or the raw S*S logits without an encoding)."""

    def mask_probs(self, feats: dict, embeds: Tensor | None, boxes: Tensor) -> Tensor:
        return self.model.code_probs(embeds)

    @property
    def paste_in_clipped_box(self) -> bool:
        return self.model.cfg.meinst.paste_in_clipped_box


class YolactGraph(nn.Module):
    """YOLACT / YOLACT++ (:meth:`Yolact.detect` and :meth:`Yolact.postprocess` for one squashed image): decode,
    Fast NMS, score threshold, ``conf`` / ``max_det``, sigmoid(proto @ coef), crop, re-scoring, bilinear upsampling
    to the image, ``> 0.5``; boxes truncated to integers as the official code."""

    def __init__(self, model: Yolact, cfg: TrainConfig, conf: float, max_det: int, dense: bool = True) -> None:
        super().__init__()
        if cfg.data.square_size <= 0:
            raise ValueError("YOLACT export needs data.square_size > 0 (the official fixed input)")
        if cfg.model.yolact.nms != "fast":
            raise ValueError("YOLACT export supports yolact.nms='fast' (the official Fast NMS)")
        self.model, self.preprocess, self.conf, self.max_det = model, Preprocess(cfg), conf, max_det
        self.dense = dense
        s = cfg.data.square_size
        with torch.no_grad():  # the input is always s x s: priors are constants
            out = model(torch.zeros(1, 3, s, s).unbind(0))
        self.register_buffer("priors", out.priors.clone(), persistent=False)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        m, c = self.model, self.model.cfg.yolact
        H, W = image.shape[-2], image.shape[-1]
        x, (h, w) = self.preprocess(image)
        feats = m.backbone(x)
        pyramid = m.fpn([feats[n] for n in m.cfg.fpn.in_features])
        head = m.prediction_layers[0]
        loc, conf, ups = zip(*(head(p, dense_coef=False) for p in pyramid))
        loc, conf = torch.cat(loc, 1)[0], torch.cat(conf, 1)[0]
        proto = F.relu(m.proto_net(pyramid[0]))[0].permute(1, 2, 0)  # (h', w', k)
        boxes = decode_boxes(loc, self.priors, clamp=c.clamp_decode)
        scores = conf.softmax(-1)[:, 1:].t()  # (C, P)
        cand = (scores.amax(0) > c.nms_conf_thresh).nonzero()[:, 0]
        second = c.nms_conf_thresh if c.second_threshold else None
        sel, labels, s = fast_nms(boxes[cand], scores[:, cand], c.nms_thresh, c.nms_top_k, c.max_num_detections, second)
        keep = ((s > c.score_threshold) & (s >= self.conf)).nonzero()[:, 0][: self.max_det]
        prior, labels, s = cand[sel[keep]], labels[keep], s[keep]
        coef = head.coefs_at([u[0] for u in ups], prior)  # the coefficient conv at the kept priors only
        masks = torch.sigmoid(proto @ coef.t()).permute(2, 0, 1)  # (D, h', w')
        if c.crop:
            masks = crop_masks(masks, boxes[prior])
        sy, sx = H / torch.sym_float(h), W / torch.sym_float(w)
        hp, wp = x.shape[-2], x.shape[-1]
        pixels = to_pixels(boxes[prior], wp * sx, hp * sy, W, H)
        if not self.dense:  # compact: the cropped (D, h', w') probabilities over the squashed image (GridMasks)
            return pixels, s, labels, masks
        full = (torch.sym_int(hp * sy + 0.5), torch.sym_int(wp * sx + 0.5))  # (H, W): the input is not padded
        padded = torch.cat([masks, masks.new_zeros(1, *masks.shape[1:])])  # resizing (1, 0, h', w') fails in eager
        full_masks = F.interpolate(padded[None], full, mode="bilinear", align_corners=False)[0, :-1, :H, :W]
        return pixels, s, labels, (full_masks > 0.5).to(torch.uint8)


def image_graph(
    model: nn.Module, cfg: TrainConfig, conf: float = 0.3, max_det: int = 100, dense: bool = True
) -> nn.Module:
    """The export graph of a blendseg model (eval mode, float32, CPU). ``dense=False``: masks stay compact (the
    per-box (D, S, S) probabilities and their paste boxes, or YOLACT's cropped (D, h', w') prototype masks), for
    memory that does not grow with the image; the runner pastes them per instance as the PyTorch path does."""
    arch = get_arch(cfg.model.arch)
    graph = arch.part("export_graph")
    if graph is None:
        raise TypeError(f"no export graph for {arch.name}: {arch.opt_out['export_graph']}")
    return graph(model.eval(), cfg, conf, max_det, dense).eval()
