"""DarkNet-53 as dbolya/yolact's ``DarkNetBackbone`` (YOLOv3's trunk): a 3x3 pre-conv, then five stages, each a
stride-2 3x3 conv followed by residual blocks (1x1 halving, 3x3 restoring), every conv with BN and LeakyReLU(0.1).
Returns ``{"res1": ..., "res5": ...}`` (strides 2 to 32, 64 to 1024 channels; named by stride as ResNet's res2-res5,
so YOLACT's FPN takes res3-res5 from either). Module and parameter names equal the official ones
(``layers.2.1.conv1.0.weight``), so released checkpoints and ``darknet53.pth`` load without renaming.

Shape legend: N images, C channels, H x W feature size.
"""

from __future__ import annotations

from torch import Tensor, nn

from ...config import BackboneConfig
from ...weights_io import read_state_dict
from .layers import get_norm

DARKNET_BLOCKS = {53: (1, 2, 8, 8, 4)}
WIDTHS = (32, 64, 128, 256, 512)  # a stage's block width; its output has twice as many channels


def darknet_conv(in_ch: int, out_ch: int, kernel_size: int, norm: str, stride: int = 1) -> nn.Sequential:
    """Conv (no bias), norm, LeakyReLU(0.1) as ``darknetconvlayer`` (keys ``0.weight``, ``1.running_mean``...)."""
    layer = get_norm(norm, out_ch)
    if layer is None:
        raise ValueError("DarkNet needs a norm layer (BN, SyncBN, FrozenBN or GN)")
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, bias=False)
    return nn.Sequential(conv, layer, nn.LeakyReLU(0.1, inplace=True))


class DarkNetBlock(nn.Module):
    """x + conv3x3(conv1x1(x)): 2C -> C -> 2C."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.conv1 = darknet_conv(2 * channels, channels, 1, norm)
        self.conv2 = darknet_conv(channels, 2 * channels, 3, norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x)) + x


class DarkNet(nn.Module):
    """``_preconv`` then ``layers[i]`` = [stride-2 conv to 2 * WIDTHS[i] channels, ``blocks[i]`` blocks]."""

    def __init__(self, blocks: tuple[int, ...] = (1, 2, 8, 8, 4), norm: str = "BN") -> None:
        super().__init__()
        if len(blocks) != len(WIDTHS):
            raise ValueError(f"DarkNet has {len(WIDTHS)} stages, got blocks {blocks}")
        self._preconv = darknet_conv(3, WIDTHS[0], 3, norm)
        self.layers = nn.ModuleList()
        in_ch = WIDTHS[0]
        for width, n in zip(WIDTHS, blocks):
            stage = [darknet_conv(in_ch, 2 * width, 3, norm, stride=2)]
            stage += [DarkNetBlock(width, norm) for _ in range(n)]
            self.layers.append(nn.Sequential(*stage))
            in_ch = 2 * width
        self.out_channels = {f"res{i + 1}": 2 * w for i, w in enumerate(WIDTHS)}
        self.strides = {f"res{i + 1}": 2 ** (i + 1) for i in range(len(WIDTHS))}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = self._preconv(x)
        out = {}
        for i, stage in enumerate(self.layers):
            x = stage(x)
            out[f"res{i + 1}"] = x
        return out


def build_darknet(cfg: BackboneConfig) -> DarkNet:
    """DarkNet of ``cfg.depth`` (53; ``blocks_per_stage`` overrides the stage depths) with ``cfg.norm``;
    ``cfg.weights``: a local ``darknet53.pth`` (dbolya/yolact's ImageNet file; it has no public URL)."""
    if cfg.depth not in DARKNET_BLOCKS:
        raise ValueError(f"DarkNet depth must be one of {sorted(DARKNET_BLOCKS)}, got {cfg.depth}")
    if cfg.freeze_at > 0:
        raise ValueError("freeze_at is not supported for DarkNet (YOLACT trains every stage); set freeze_at=0")
    net = DarkNet(tuple(cfg.blocks_per_stage) or DARKNET_BLOCKS[cfg.depth], cfg.norm)
    if cfg.weights:
        state = {
            k.removeprefix("backbone."): v for k, v in read_state_dict(cfg.weights, "backbone weights file").items()
        }
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{cfg.weights}: DarkNet weights lack {len(missing)} keys, e.g. {missing[:3]}")
        if unexpected:
            raise ValueError(f"{cfg.weights}: unexpected keys for this DarkNet, e.g. {unexpected[:3]}")
    return net
