"""Panoptic FPN's semantic branch (detectron2 ``SemSegFPNHead``), the panoptic part of panoptic BlendMask
(adelaidet.md §2.6): the module, its loss and its postprocess (semantic argmax, then the combine step).

Shape legend: N images, S semantic classes (0 = things, 1.. = stuff), F FPN channels, W head width,
Hp x Wp padded input, H x W output image, D detections.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...ops.losses import cross_entropy
from ...ops.panoptic import combine_semantic_and_instances, semantic_argmax
from ...ops.resize import BilinearUpsample, bilinear_resize
from ...structures import PanopticResult
from ..core.layers import Conv2dNorm, get_norm


class SemSegFPNHead(nn.Module):
    """One scale head per input level (3x3 conv + norm + ReLU, x2 bilinear upsampling, repeated until
    ``common_stride``), the heads summed, then a 1x1 predictor to S classes. Children are named after the input
    levels (``p2.0``, ``p4.2``, ``predictor``), detectron2's layout.

    Args:
        in_channels / in_strides: per input level, finest first (e.g. P2-P5: F each, strides 4-32).
        in_names: the levels' names (module names). ``num_classes``: S. ``convs_dim``: W.
    """

    def __init__(
        self,
        in_names: list[str],
        in_channels: list[int],
        in_strides: list[int],
        num_classes: int,
        convs_dim: int = 128,
        common_stride: int = 4,
        norm: str = "GN",
    ) -> None:
        super().__init__()
        self.in_names, self.common_stride = list(in_names), common_stride
        for name, cin, stride in zip(in_names, in_channels, in_strides):
            if stride < common_stride:
                raise ValueError(f"semantic input {name} has stride {stride} < common_stride {common_stride}")
            layers: list[nn.Module] = []
            for k in range(max(1, int(math.log2(stride) - math.log2(common_stride)))):
                conv = Conv2dNorm(
                    cin if k == 0 else convs_dim,
                    convs_dim,
                    3,
                    padding=1,
                    bias=norm in ("", "none"),
                    norm=get_norm(norm, convs_dim),
                    activation=F.relu,
                )
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # c2_msra_fill
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
                layers.append(conv)
                if stride != common_stride:
                    layers.append(BilinearUpsample(2))
            self.add_module(name, nn.Sequential(*layers))
        self.predictor = nn.Conv2d(convs_dim, num_classes, 1)
        nn.init.kaiming_normal_(self.predictor.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.predictor.bias)

    def forward(self, feats: list[Tensor]) -> Tensor:
        """feats: the ``in_names`` maps, finest first. Returns (N, S, Hp / common_stride, Wp / common_stride)."""
        x = sum(getattr(self, name)(f) for name, f in zip(self.in_names, feats))
        return self.predictor(x)


def semantic_seg_loss(logits: Tensor, targets: list[Tensor], common_stride: int = 4, ignore_value: int = 255) -> Tensor:
    """detectron2's ``loss_sem_seg`` (before its weight): cross-entropy, mean over the non-ignored pixels, of the
    logits upsampled x ``common_stride`` (bilinear) against the targets padded with ``ignore_value``.

    Args:
        logits: (N, S, Hp / stride, Wp / stride). ``targets``: per image (h, w) integer labels, h <= Hp, w <= Wp.
    """
    up = bilinear_resize(logits, scale_factor=common_stride)
    hp, wp = up.shape[-2:]
    gt = torch.full((len(targets), hp, wp), ignore_value, dtype=torch.int64, device=logits.device)
    for i, t in enumerate(targets):
        gt[i, : t.shape[-2], : t.shape[-1]] = t.to(gt.device)
    if not (gt != ignore_value).any():  # detectron2 would return NaN (mean over nothing)
        return up.sum() * 0
    return cross_entropy(up, gt, ignore_index=ignore_value)


@torch.no_grad()
def panoptic_postprocess(
    logits: Tensor,
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    masks: Tensor,
    scores: Tensor,
    labels: Tensor,
    common_stride: int = 4,
    instances_confidence_thresh: float = 0.45,
    overlap_thresh: float = 0.4,
    stuff_area_limit: int = 4096,
) -> PanopticResult:
    """One image's panoptic result as panoptic BlendMask makes it: the semantic argmax of the postprocessed logits
    (S, Hp / stride, Wp / stride) at ``output_size``, then the combine heuristic with the final (pasted) instance
    masks (D, H, W), their scores and labels."""
    semantic = semantic_argmax(logits, input_size, output_size, common_stride)
    seg, info = combine_semantic_and_instances(
        masks, scores, labels, semantic, overlap_thresh, stuff_area_limit, instances_confidence_thresh
    )
    return PanopticResult(seg, info, semantic)
