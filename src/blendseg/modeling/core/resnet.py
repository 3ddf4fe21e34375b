"""ResNet bottom-up in detectron2's layout (stem, res2-res5), FrozenBN/BN/GN, stride-in-1x1 and DCN blocks.

The module and parameter names equal detectron2's (``res3.0.conv2.norm.weight``) so AdelaiDet checkpoints map
one to one; torchvision ImageNet weights load through :func:`torchvision_to_ours`.

Shape legend: N images, C channels, H x W feature size.
"""

from __future__ import annotations

import warnings

import torch.nn.functional as F
from torch import Tensor, nn

from ...config import BackboneConfig
from ...weights_io import read_state_dict
from .layers import Conv2dNorm, DeformConv2dNorm, FrozenBN, get_norm

DEPTH_TO_BLOCKS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str, **_: object) -> None:
        super().__init__()
        self.shortcut = None
        if in_ch != out_ch or stride != 1:
            self.shortcut = Conv2dNorm(in_ch, out_ch, 1, stride, bias=False, norm=get_norm(norm, out_ch))
        self.conv1 = Conv2dNorm(in_ch, out_ch, 3, stride, 1, bias=False, norm=get_norm(norm, out_ch))
        self.conv2 = Conv2dNorm(out_ch, out_ch, 3, 1, 1, bias=False, norm=get_norm(norm, out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.relu_(self.conv1(x)))  # in place on fresh maps: bitwise the same, less memory traffic
        out += self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (optionally deformable) -> 1x1 with the stride in the 1x1 (MSRA) or the 3x3 (torchvision)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        norm: str,
        bottleneck_ch: int,
        groups: int = 1,
        stride_in_1x1: bool = True,
        deform: bool = False,
        modulated: bool = False,
        deform_bias: bool = False,
    ) -> None:
        super().__init__()
        self.shortcut = None
        if in_ch != out_ch or stride != 1:
            self.shortcut = Conv2dNorm(in_ch, out_ch, 1, stride, bias=False, norm=get_norm(norm, out_ch))
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2dNorm(in_ch, bottleneck_ch, 1, s1, bias=False, norm=get_norm(norm, bottleneck_ch))
        self.modulated = modulated
        if deform:
            self.conv2_offset = nn.Conv2d(bottleneck_ch, 27 if modulated else 18, 3, s3, 1)
            nn.init.zeros_(self.conv2_offset.weight)
            nn.init.zeros_(self.conv2_offset.bias)
            self.conv2 = DeformConv2dNorm(
                bottleneck_ch, bottleneck_ch, s3, 1, groups, get_norm(norm, bottleneck_ch), deform_bias
            )
        else:
            self.conv2_offset = None
            self.conv2 = Conv2dNorm(
                bottleneck_ch,
                bottleneck_ch,
                3,
                s3,
                1,
                groups=groups,
                bias=False,
                norm=get_norm(norm, bottleneck_ch),
            )
        self.conv3 = Conv2dNorm(bottleneck_ch, out_ch, 1, bias=False, norm=get_norm(norm, out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(self.conv1(x))  # in place on fresh maps: bitwise the same, less memory traffic
        if self.conv2_offset is None:
            out = self.conv2(out)
        elif self.modulated:
            dy_dx_mask = self.conv2_offset(out)
            out = self.conv2(out, dy_dx_mask[:, :18], dy_dx_mask[:, 18:].sigmoid())
        else:
            out = self.conv2(out, self.conv2_offset(out), None)
        out = self.conv3(F.relu_(out))
        out += self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out)


class ResNet(nn.Module):
    """ResNet bottom-up returning ``{"res2": ..., "res3": ..., "res4": ..., "res5": ...}`` (strides 4 to 32).

    Args:
        depth: 18, 34, 50, 101 or 152.
        norm: FrozenBN | BN | SyncBN | GN.
        freeze_at: 0 trains everything; 1 freezes the stem; k freezes the stem and res2..res{k}.
        stem_out_channels / res2_out_channels: widths (detectron2's STEM_OUT_CHANNELS / RES2_OUT_CHANNELS);
            narrow values give the tiny CPU backbones.
        deform_on_per_stage: DCN in (res2, res3, res4, res5); ``deform_interval`` keeps every k-th block.
    """

    def __init__(
        self,
        depth: int = 50,
        norm: str = "FrozenBN",
        freeze_at: int = 2,
        stride_in_1x1: bool = True,
        stem_out_channels: int = 64,
        res2_out_channels: int = 256,
        num_groups: int = 1,
        width_per_group: int = 64,
        deform_on_per_stage: tuple[bool, bool, bool, bool] = (False, False, False, False),
        deform_modulated: bool = False,
        deform_interval: int = 1,
        deform_bias: bool = False,
        blocks_per_stage: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        if depth not in DEPTH_TO_BLOCKS:
            raise ValueError(f"ResNet depth must be one of {sorted(DEPTH_TO_BLOCKS)}, got {depth}")
        basic = depth in (18, 34)
        if basic and any(deform_on_per_stage):
            raise ValueError("deformable convolutions need bottleneck blocks (depth >= 50)")
        self.stem = nn.Module()
        self.stem.conv1 = Conv2dNorm(3, stem_out_channels, 7, 2, 3, bias=False, norm=get_norm(norm, stem_out_channels))
        in_ch, out_ch = stem_out_channels, res2_out_channels
        bottleneck_ch = num_groups * width_per_group
        self.stage_names = ("res2", "res3", "res4", "res5")
        self.out_channels: dict[str, int] = {}
        self.strides = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
        for idx, (name, n_blocks) in enumerate(zip(self.stage_names, blocks_per_stage or DEPTH_TO_BLOCKS[depth])):
            blocks = []
            for b in range(n_blocks):
                stride = 2 if (b == 0 and idx > 0) else 1
                deform = deform_on_per_stage[idx] and b % deform_interval == 0
                blk = (BasicBlock if basic else Bottleneck)(
                    in_ch,
                    out_ch,
                    stride,
                    norm,
                    bottleneck_ch=bottleneck_ch,
                    groups=num_groups,
                    stride_in_1x1=stride_in_1x1,
                    deform=deform,
                    modulated=deform_modulated,
                    deform_bias=deform_bias,
                )
                blocks.append(blk)
                in_ch = out_ch
            self.add_module(name, nn.Sequential(*blocks))
            self.out_channels[name] = out_ch
            out_ch *= 2
            bottleneck_ch *= 2
        self._freeze(freeze_at)

    def _freeze(self, freeze_at: int) -> None:
        stages = [self.stem] + [getattr(self, n) for n in self.stage_names]
        for module in stages[: max(freeze_at, 0)]:
            for p in module.parameters():
                p.requires_grad_(False)
            _to_frozen_bn(module)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        x = F.max_pool2d(F.relu_(self.stem.conv1(x)), kernel_size=3, stride=2, padding=1)
        out = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            out[name] = x
        return out


def _to_frozen_bn(module: nn.Module) -> None:
    """Replace BatchNorm children by FrozenBN with the same statistics (detectron2 freeze)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            frozen = FrozenBN(child.num_features, eps=child.eps)
            if child.affine:
                frozen.weight.copy_(child.weight.detach())
                frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _to_frozen_bn(child)


def build_resnet(cfg: BackboneConfig) -> ResNet:
    """Build the ResNet of ``cfg`` and load its ImageNet weights when ``cfg.weights`` names some."""
    net = ResNet(
        depth=cfg.depth,
        norm=cfg.norm,
        freeze_at=0,
        stride_in_1x1=cfg.stride_in_1x1,
        stem_out_channels=cfg.stem_out_channels,
        res2_out_channels=cfg.res2_out_channels,
        num_groups=cfg.num_groups,
        width_per_group=cfg.width_per_group,
        deform_on_per_stage=cfg.deform_on_per_stage,
        deform_modulated=cfg.deform_modulated,
        deform_interval=cfg.deform_interval,
        deform_bias=cfg.deform_bias,
        blocks_per_stage=tuple(cfg.blocks_per_stage),
    )
    if cfg.weights:
        load_imagenet_weights(net, cfg)
    net._freeze(cfg.freeze_at)
    return net


def torchvision_to_ours(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename a torchvision ``resnetXX`` state dict to this module's (detectron2) names; drops ``fc``."""
    out = {}
    for k, v in state.items():
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        if k.startswith("conv1."):
            k = "stem.conv1." + k[len("conv1.") :]
        elif k.startswith("bn1."):
            k = "stem.conv1.norm." + k[len("bn1.") :]
        else:
            layer, rest = k.split(".", 1)
            k = f"res{int(layer[len('layer') :]) + 1}." + rest
            for j in (1, 2, 3):
                k = k.replace(f".bn{j}.", f".conv{j}.norm.")
            k = k.replace(".downsample.0.", ".shortcut.").replace(".downsample.1.", ".shortcut.norm.")
        out[k] = v
    return out


def load_imagenet_weights(net: ResNet, cfg: BackboneConfig) -> None:
    """Load ImageNet weights: ``"torchvision"`` (torchvision's enum weights) or a local file in either layout."""
    if cfg.weights.split(":")[0] == "torchvision":  # "torchvision" or "torchvision:IMAGENET1K_V2"
        import torchvision

        if cfg.stride_in_1x1:
            warnings.warn(
                "torchvision ResNet weights put the stride in the 3x3 conv; set stride_in_1x1=false", stacklevel=2
            )
        enum_name = cfg.weights.split(":")[1] if ":" in cfg.weights else "DEFAULT"
        builder = getattr(torchvision.models, f"resnet{cfg.depth}")
        state = builder(weights=enum_name).state_dict()
    else:
        state = read_state_dict(cfg.weights, "backbone weights file")
    if any(k.startswith("layer1.") for k in state):
        state = torchvision_to_ours(state)
    state = {k.removeprefix("backbone.bottom_up."): v for k, v in state.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    # DCN offsets start at zero, YOLACT++'s DCN bias too
    missing = [k for k in missing if "conv2_offset" not in k and not k.endswith("conv2.bias")]
    if missing:
        raise ValueError(f"{cfg.weights}: backbone weights lack {len(missing)} keys, e.g. {missing[:3]}")
    if unexpected:
        warnings.warn(f"{cfg.weights}: ignored {len(unexpected)} keys, e.g. {unexpected[:3]}", stacklevel=2)
