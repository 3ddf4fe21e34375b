"""BlendMask bottom modules: K bases from backbone (``res*``) or FPN (``p*``) maps, plus the auxiliary semantic head.

- :class:`ProtoNet`: AdelaiDet's basis module (default): refine each input, sum at the first input's size, conv
  tower, x2 upsample, conv, 1x1 to K. Bases stride = first input stride / 2 (P3-P5 -> 4; P3 alone is the
  "Proto-P3" row of the paper's Table 7).
- :class:`DeepLabV3Plus`: the decoder the paper starts from: ASPP on the coarse input (C5 or P5), upsampled onto a
  48-channel projection of the fine input (C3 / P3 -> bases stride 8, P2 -> stride 4, the "+s/4" row), two convs,
  1x1 to K.

Both carry ``seg_head`` (the reference's key layout) on their first input: conv-BN-ReLU x2, 1x1 to C + 1.

Shape legend: N images, K bases, C classes, W module width, H_i x W_i input map sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...ops.resize import BilinearUpsample, bilinear_resize
from ..core.layers import get_norm


def conv_block(cin: int, cout: int, norm: str, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    """conv (no bias, kaiming_uniform a=1) -> norm -> ReLU (AdelaiDet ``conv_with_kaiming_uniform``)."""
    conv = nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    return nn.Sequential(conv, get_norm(norm, cout), nn.ReLU(inplace=True))


def semantic_head(cin: int, width: int, num_classes: int) -> nn.Sequential:
    """The reference's ``seg_head``: two 3x3 conv-BN(plain)-ReLU, then 1x1 to C + 1 (background 0)."""
    return nn.Sequential(
        nn.Conv2d(cin, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, num_classes + 1, 1),
    )


class ProtoNet(nn.Module):
    """AdelaiDet's "ProtoNet" basis module.

    Args:
        in_channels: channels of each input, finest first (e.g. P3, P4, P5).
        num_bases: K. ``convs_dim``: W. ``num_convs``: tower convs before the x2 upsampling.
        num_classes: C; the semantic head predicts C + 1 on the first input when ``semantic``.
    """

    upsample = 2  # bases stride = first input stride / 2

    def __init__(
        self,
        in_channels: list[int],
        num_bases: int = 4,
        convs_dim: int = 128,
        num_convs: int = 3,
        norm: str = "SyncBN",
        num_classes: int = 80,
        semantic: bool = True,
    ) -> None:
        super().__init__()
        self.refine = nn.ModuleList([conv_block(c, convs_dim, norm) for c in in_channels])
        layers: list[nn.Module] = [conv_block(convs_dim, convs_dim, norm) for _ in range(num_convs)]
        layers += [BilinearUpsample(2)]
        layers += [conv_block(convs_dim, convs_dim, norm), nn.Conv2d(convs_dim, num_bases, 1)]
        self.tower = nn.Sequential(*layers)
        self.seg_head = semantic_head(in_channels[0], convs_dim, num_classes) if semantic else None

    def forward(self, feats: list[Tensor], semantic: bool = False) -> tuple[Tensor, Tensor | None]:
        """feats: finest first (N, C_i, H_i, W_i). Returns bases (N, K, 2*H_0, 2*W_0) and semantic logits
        (N, C + 1, H_0, W_0) or None."""
        x = self.refine[0](feats[0])
        for refine, f in zip(self.refine[1:], feats[1:]):
            x = x + bilinear_resize(refine(f), x.shape[-2:])
        sem = self.seg_head(feats[0]) if (semantic and self.seg_head is not None) else None
        return self.tower(x), sem


class ASPP(nn.Module):
    """DeepLabV3 atrous spatial pyramid pooling: 1x1, one dilated 3x3 per rate and image pooling, concatenated and
    projected to W, then dropout. The pooling branch has no norm (BN on a 1x1 map fails at batch 1)."""

    def __init__(self, cin: int, width: int, rates: tuple[int, ...], norm: str, dropout: float = 0.1) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            [conv_block(cin, width, norm, kernel=1)] + [conv_block(cin, width, norm, dilation=r) for r in rates]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, width, 1), nn.ReLU())
        self.project = conv_block(width * (len(rates) + 2), width, norm, kernel=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(x).expand(-1, -1, *x.shape[-2:])
        return self.dropout(self.project(torch.cat([b(x) for b in self.branches] + [pooled], dim=1)))


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ decoder as a bottom module: inputs (fine, coarse), e.g. (C3, C5), (P3, P5) or (P2, P5).

    Args:
        in_channels: channels of the fine and the coarse input. ``convs_dim``: W (128 in the paper's ablations,
        256 in its final models). ``aspp_rates``: dilations of the ASPP 3x3 branches.
    """

    upsample = 1  # bases stride = fine input stride

    def __init__(
        self,
        in_channels: list[int],
        num_bases: int = 4,
        convs_dim: int = 128,
        norm: str = "BN",
        num_classes: int = 80,
        semantic: bool = True,
        aspp_rates: tuple[int, ...] = (6, 12, 18),
        low_level_channels: int = 48,
    ) -> None:
        super().__init__()
        if len(in_channels) != 2:
            raise ValueError(f"DeepLabV3+ takes two inputs (fine, coarse), got {len(in_channels)}")
        self.aspp = ASPP(in_channels[1], convs_dim, tuple(aspp_rates), norm)
        self.low_level = conv_block(in_channels[0], low_level_channels, norm, kernel=1)
        self.decoder = nn.Sequential(
            conv_block(convs_dim + low_level_channels, convs_dim, norm),
            conv_block(convs_dim, convs_dim, norm),
            nn.Conv2d(convs_dim, num_bases, 1),
        )
        self.seg_head = semantic_head(in_channels[0], convs_dim, num_classes) if semantic else None

    def forward(self, feats: list[Tensor], semantic: bool = False) -> tuple[Tensor, Tensor | None]:
        """feats: (fine (N, C_0, H_0, W_0), coarse). Returns bases (N, K, H_0, W_0) and semantic logits or None."""
        fine, coarse = feats
        top = bilinear_resize(self.aspp(coarse), fine.shape[-2:])
        bases = self.decoder(torch.cat([top, self.low_level(fine)], dim=1))
        sem = self.seg_head(fine) if (semantic and self.seg_head is not None) else None
        return bases, sem


BOTTOM_MODULES = {"protonet": ProtoNet, "deeplab": DeepLabV3Plus}
