"""DLA-34 bottom-up as AdelaiDet builds it (``build_fcos_dla_fpn_backbone``, from ucbdrive/dla): a 7x7 stride-1
stem, two conv levels and four trees of basic blocks whose roots aggregate their children. Returns
``{"level0": ..., "level5": ...}`` (strides 1 to 32, AdelaiDet's names: its configs feed ``level3``-``level5`` to
the FPN). Module and parameter names equal AdelaiDet's (``level3.tree1.tree2.conv1.weight``), so released
checkpoints and the ImageNet file (``dla34-ba72cf86.pth``) map one to one.

Shape legend: N images, C channels, H x W feature size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...config import BackboneConfig
from ...weights_io import read_state_dict
from .layers import get_norm

DLA_LEVELS = {34: ((1, 1, 1, 2, 2, 1), (16, 32, 64, 128, 256, 512))}  # depth -> (levels, channels); BasicBlock
DLA34_IMAGENET_URL = "http://dl.yf.io/dla/models/imagenet/dla34-ba72cf86.pth"  # AdelaiDet's MODEL.WEIGHTS


def _norm(norm: str, channels: int) -> nn.Module:
    layer = get_norm(norm, channels)
    if layer is None:
        raise ValueError("DLA needs a norm layer (BN, SyncBN, FrozenBN or GN)")
    return layer


class BasicBlock(nn.Module):
    """conv3x3(stride) - norm - ReLU - conv3x3 - norm, plus the residual the tree hands in (default: the input)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, out_ch)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        out = self.bn2(self.conv2(F.relu_(self.bn1(self.conv1(x)))))  # in place on fresh maps, as ResNet's
        out += x if residual is None else residual
        return F.relu_(out)


class Root(nn.Module):
    """Aggregation node: conv (k x k) over the concatenated children, norm, (+ first child), ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, residual: bool, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, 1, (kernel_size - 1) // 2, bias=False)
        self.bn = _norm(norm, out_ch)
        self.residual = residual

    def forward(self, *children: Tensor) -> Tensor:
        x = self.bn(self.conv(torch.cat(children, 1)))
        if self.residual:
            x += children[0]
        return F.relu_(x)


class Tree(nn.Module):
    """A tree of ``levels`` levels: two subtrees (or two blocks at level 1), the root joining the last two outputs
    and, with ``level_root``, the tree's (downsampled) input and the earlier subtrees' outputs."""

    def __init__(
        self,
        levels: int,
        in_ch: int,
        out_ch: int,
        norm: str,
        stride: int = 1,
        level_root: bool = False,
        root_dim: int = 0,
        root_kernel_size: int = 1,
        root_residual: bool = False,
    ) -> None:
        super().__init__()
        root_dim = (root_dim or 2 * out_ch) + (in_ch if level_root else 0)
        if levels == 1:
            self.tree1 = BasicBlock(in_ch, out_ch, stride, norm)
            self.tree2 = BasicBlock(out_ch, out_ch, 1, norm)
            self.root = Root(root_dim, out_ch, root_kernel_size, root_residual, norm)
        else:
            sub = {"norm": norm, "root_kernel_size": root_kernel_size, "root_residual": root_residual}
            self.tree1 = Tree(levels - 1, in_ch, out_ch, stride=stride, **sub)
            self.tree2 = Tree(levels - 1, out_ch, out_ch, root_dim=root_dim + out_ch, **sub)
        self.levels, self.level_root, self.stride = levels, level_root, stride
        self.project = None
        if in_ch != out_ch:
            self.project = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), _norm(norm, out_ch))

    def forward(self, x: Tensor, children: list[Tensor] | None = None) -> Tensor:
        children = [] if children is None else children
        bottom = F.max_pool2d(x, self.stride, self.stride) if self.stride > 1 else x
        if self.level_root:
            children.append(bottom)
        if self.levels == 1:
            residual = self.project(bottom) if self.project is not None else bottom
            x1 = self.tree1(x, residual)
            return self.root(self.tree2(x1), x1, *children)
        if self.training and self.project is not None:
            # the reference projects here too and feeds it nowhere but a zero term (its parameters get zero
            # gradients instead of none, and its BN statistics move, as in AdelaiDet); inference skips it
            x = x + self.project(bottom).sum() * 0.0
        x1 = self.tree1(x)
        children.append(x1)
        return self.tree2(x1, children=children)


class DLA(nn.Module):
    """DLA bottom-up: ``base_layer``, ``level0``/``level1`` (conv levels), ``level2``-``level5`` (trees)."""

    def __init__(
        self, levels: tuple[int, ...], channels: tuple[int, ...], norm: str = "BN", residual_root: bool = False
    ) -> None:
        super().__init__()
        c = channels
        self.base_layer = nn.Sequential(
            nn.Conv2d(3, c[0], 7, 1, 3, bias=False), _norm(norm, c[0]), nn.ReLU(inplace=True)
        )
        self.level0 = self._conv_level(c[0], c[0], levels[0], 1, norm)
        self.level1 = self._conv_level(c[0], c[1], levels[1], 2, norm)
        self.level2 = Tree(levels[2], c[1], c[2], norm, 2, level_root=False, root_residual=residual_root)
        self.level3 = Tree(levels[3], c[2], c[3], norm, 2, level_root=True, root_residual=residual_root)
        self.level4 = Tree(levels[4], c[3], c[4], norm, 2, level_root=True, root_residual=residual_root)
        self.level5 = Tree(levels[5], c[4], c[5], norm, 2, level_root=True, root_residual=residual_root)
        self.out_channels = {f"level{i}": c[i] for i in range(6)}
        self.strides = {f"level{i}": 2**i for i in range(6)}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # the reference's init: N(0, sqrt(2 / (k * k * out)))
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))

    @staticmethod
    def _conv_level(in_ch: int, out_ch: int, convs: int, stride: int, norm: str) -> nn.Sequential:
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [nn.Conv2d(in_ch, out_ch, 3, stride if i == 0 else 1, 1, bias=False), _norm(norm, out_ch)]
            layers.append(nn.ReLU(inplace=True))
            in_ch = out_ch
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self.base_layer(x)
        out = {}
        for i in range(6):
            x = getattr(self, f"level{i}")(x)
            out[f"level{i}"] = x
        return out


def build_dla(cfg: BackboneConfig) -> DLA:
    """DLA of ``cfg.depth`` (34) with ``cfg.norm``; ``cfg.weights``: "imagenet" (AdelaiDet's ImageNet file, from
    dl.yf.io) or a local file in the DLA / AdelaiDet layout."""
    if cfg.depth not in DLA_LEVELS:
        raise ValueError(f"DLA depth must be one of {sorted(DLA_LEVELS)}, got {cfg.depth}")
    if cfg.freeze_at > 0:
        raise ValueError("DLA stages cannot be frozen (AdelaiDet asserts FREEZE_AT == -1); set freeze_at=0")
    levels, channels = DLA_LEVELS[cfg.depth]
    net = DLA(tuple(cfg.blocks_per_stage) or levels, channels, cfg.norm)
    if cfg.weights:
        if cfg.weights == "imagenet":
            state = torch.hub.load_state_dict_from_url(DLA34_IMAGENET_URL, map_location="cpu")
        else:
            state = read_state_dict(cfg.weights, "backbone weights file")
        state = {k.removeprefix("backbone.bottom_up."): v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{cfg.weights}: DLA weights lack {missing[:3]} / have extra {unexpected[:3]} keys")
    return net
