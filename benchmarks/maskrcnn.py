"""torchvision's Mask R-CNN behind blendseg's model contract, for side-by-side training on the same data pipeline,
solver and evaluator as the tiny presets (benchmarks/accuracy.py). Not part of the library.

The backbone is the preset's own (narrow ResNet + FPN on res3-res5, P3-P5 plus a max-pooled P6 for the RPN, as
torchvision's LastLevelMaxPool); the heads are torchvision's with their widths scaled to the FPN's (box head
F*7*7 -> 256 -> 256, mask head 4 convs of F channels); anchors 32-256 px, one size per level, three aspect ratios.
Images arrive resized and padded by our loader, so torchvision's own resize is switched off.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from blendseg.config import FCOSDetectorConfig
from blendseg.modeling.core.fcos_inference import Detections, rescale_and_clip
from blendseg.modeling.core.fpn import FPN
from blendseg.modeling.core.resnet import build_resnet
from blendseg.structures import DenseMasks, ImageBatch


class ResNetFPN(nn.Module):
    """Our ResNet + FPN returning torchvision's feature dict ("0".."2" = P3-P5, "pool" = P6 by max-pooling)."""

    def __init__(self, cfg: FCOSDetectorConfig) -> None:
        super().__init__()
        self.body = build_resnet(cfg.backbone)
        self.in_features = list(cfg.fpn.in_features)
        self.fpn = FPN(
            [self.body.out_channels[n] for n in self.in_features], [self.body.strides[n] for n in self.in_features],
            cfg.fpn.out_channels, 0, cfg.fpn.upsample, False, False,
        )  # fmt: skip
        self.out_channels = cfg.fpn.out_channels
        self.amp_dtype: torch.dtype | None = None  # set per call by TorchvisionMaskRCNN: the run's autocast

    def forward(self, x: Tensor) -> OrderedDict:
        with torch.autocast(x.device.type, self.amp_dtype, enabled=self.amp_dtype is not None):
            feats = self.body(x)
            pyramid = self.fpn([feats[n] for n in self.in_features])
        out = OrderedDict((str(i), p.float()) for i, p in enumerate(pyramid))
        out["pool"] = F.max_pool2d(out[str(len(pyramid) - 1)], 1, 2)
        return out


@dataclass
class MaskRCNNOutput:
    detections: list[dict[str, Tensor]] = field(default_factory=list)
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    losses: dict[str, Tensor] = field(default_factory=dict)


class TorchvisionMaskRCNN(nn.Module):
    """``forward(images, targets=None)`` with losses iff targets (train mode), ``postprocess(out, sizes)`` ->
    :class:`Detections` with masks, labels contiguous 0..C-1 (torchvision's 0 is the background)."""

    def __init__(self, cfg: FCOSDetectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        backbone = ResNetFPN(cfg)
        ch = backbone.out_channels
        anchors = AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4)
        mean = [m / 255 for m in cfg.pixel_mean]
        std = [s / 255 for s in cfg.pixel_std]
        classes = cfg.fcos.num_classes + 1
        self.net = MaskRCNN(
            backbone, rpn_anchor_generator=anchors, image_mean=mean, image_std=std,
            box_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], 7, 2), box_head=TwoMLPHead(ch * 49, 256),
            box_predictor=FastRCNNPredictor(256, classes),
            mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], 14, 2), mask_head=MaskRCNNHeads(ch, [ch] * 4, 1),
            mask_predictor=MaskRCNNPredictor(ch, ch, classes),
        )  # fmt: skip
        self.net.transform.resize = lambda image, target=None: (image, target)  # our loader resized already

    def forward(self, images: ImageBatch | list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        """Under a run's autocast (the presets train in bf16 on CPUs with bf16 units) only the backbone and FPN
        run in it; the RPN and RoI heads run in float32, as blendseg's own decoding does (in bf16 torchvision's
        box regression turned NaN within 200 iterations, twice)."""
        kind = images.tensor.device.type if isinstance(images, ImageBatch) else images[0].device.type
        amp = torch.is_autocast_enabled(kind)
        self.net.backbone.amp_dtype = torch.get_autocast_dtype(kind) if amp else None
        with torch.autocast(kind, enabled=False):
            return self._forward(images, targets)

    def _forward(self, images: ImageBatch | list[Tensor], targets: list[dict[str, Tensor]] | None):
        if isinstance(images, ImageBatch):
            sizes = list(images.image_sizes)
            images = [images.tensor[i, :, :h, :w] for i, (h, w) in enumerate(sizes)]
        else:
            sizes = [tuple(im.shape[-2:]) for im in images]
        images = [im.float() / 255 for im in images]
        if self.cfg.input_format == "BGR":
            images = [im.flip(0) for im in images]
        if targets is not None:
            device = images[0].device
            tv = [
                {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device) + 1,
                 "masks": t["masks"].to(device, torch.uint8)}
                for t in targets
            ]  # fmt: skip
            return MaskRCNNOutput(image_sizes=sizes, losses=self.net(images, tv))
        return MaskRCNNOutput(self.net(images), sizes)

    @torch.no_grad()
    def postprocess(self, out: MaskRCNNOutput, original_sizes: list[tuple[int, int]] | None = None):
        original_sizes = original_sizes or out.image_sizes
        results = []
        for d, size, orig in zip(out.detections, out.image_sizes, original_sizes):
            _, clipped, keep = rescale_and_clip(d["boxes"], size, orig)
            probs = d["masks"][keep]  # (D, 1, h, w) at the input size, pasted by torchvision
            masks = F.interpolate(probs, size=orig, mode="bilinear", align_corners=False)[:, 0] > 0.5
            n = int(keep.sum())
            zeros = torch.zeros(n, dtype=torch.int64)
            results.append(
                Detections(
                    clipped[keep],
                    d["scores"][keep],
                    d["labels"][keep] - 1,
                    torch.zeros(n, 2),
                    zeros,
                    zeros,
                    masks=DenseMasks(masks),
                )
            )
        return results
