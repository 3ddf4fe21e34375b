"""FPN on res3-res5 with optional P6/P7 computed from P5 (AdelaiDet ``build_fcos_resnet_fpn_backbone``).

Shape legend: N images, C channels, H x W feature size. Module names follow detectron2 (``fpn_lateral3``,
``fpn_output3``, ``top_block.p6``) so checkpoints map one to one.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ...ops.resize import bilinear_resize


def c2_xavier_fill(module: nn.Conv2d) -> None:
    """Caffe2's XavierFill as detectron2 applies it: kaiming_uniform(a=1), zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class FPN(nn.Module):
    """Top-down FPN (sum fusion, nearest x2 upsampling) returning ``{"p3": ..., "p7": ...}``.

    Args:
        in_channels: channels of the inputs, finest first (e.g. res3, res4, res5).
        in_strides: their strides, finest first (8, 16, 32).
        out_channels: FPN width.
        top_levels: 0, 1 (P6) or 2 (P6, P7); P6 = conv3x3/2(P5), P7 = conv3x3/2(ReLU(P6)).
        upsample / relu_outputs / relu_before_p7: YOLACT's variant is bilinear, ReLU on P3-P5, P7 = conv(P6).
    """

    def __init__(
        self,
        in_channels: list[int],
        in_strides: list[int],
        out_channels: int = 256,
        top_levels: int = 2,
        upsample: str = "nearest",
        relu_outputs: bool = False,
        relu_before_p7: bool = True,
    ) -> None:
        super().__init__()
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
        self.upsample, self.relu_outputs, self.relu_before_p7 = upsample, relu_outputs, relu_before_p7
        self.levels = [int(s).bit_length() - 1 for s in in_strides]  # stride 8 -> level 3
        for lvl, c in zip(self.levels, in_channels):
            lateral = nn.Conv2d(c, out_channels, 1)
            output = nn.Conv2d(out_channels, out_channels, 3, padding=1)
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"fpn_lateral{lvl}", lateral)
            self.add_module(f"fpn_output{lvl}", output)
        if top_levels not in (0, 1, 2):
            raise ValueError(f"top_levels must be 0, 1 or 2, got {top_levels}")
        self.top_levels = top_levels
        self.top_block = nn.Module()
        if top_levels >= 1:
            self.top_block.p6 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
            c2_xavier_fill(self.top_block.p6)
        if top_levels == 2:
            self.top_block.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
            c2_xavier_fill(self.top_block.p7)
        self.out_channels = out_channels
        self.strides = [2**lvl for lvl in self.levels] + [2 ** (self.levels[-1] + i + 1) for i in range(top_levels)]

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        """feats: finest first, (N, C_i, H_i, W_i). Returns P3..P5(+P6, P7), each (N, C, H_l, W_l)."""
        act = F.relu_ if self.relu_outputs else (lambda t: t)  # in place on the fresh output conv maps
        prev = getattr(self, f"fpn_lateral{self.levels[-1]}")(feats[-1])
        outs = [act(getattr(self, f"fpn_output{self.levels[-1]}")(prev))]
        for lvl, f in zip(reversed(self.levels[:-1]), reversed(feats[:-1])):
            if self.upsample == "bilinear":
                top_down = bilinear_resize(prev, f.shape[-2:])
            else:
                top_down = F.interpolate(prev, size=f.shape[-2:], mode="nearest")
            prev = getattr(self, f"fpn_lateral{lvl}")(f)
            prev += top_down  # in place on the fresh lateral map
            outs.insert(0, act(getattr(self, f"fpn_output{lvl}")(prev)))
        if self.top_levels >= 1:
            outs.append(self.top_block.p6(outs[-1]))
        if self.top_levels == 2:
            outs.append(self.top_block.p7(F.relu(outs[-1]) if self.relu_before_p7 else outs[-1]))
        return outs
