"""Deformable convolution: blendseg's grid_sample + matmul form against torchvision's CPU kernel on the shapes the
models run (a 256-channel P3 map of a 608 px image, YOLACT++'s 128-channel C3 blocks at 550 px, stride 1 and 2);
``--saved``: what each form keeps for the backward over R-101-DCN's deformable blocks (blendmask_r101_dcni3_5x at
800 x 1216, batch 8), the reason the GPU path calls torchvision's CUDA kernel.

    python -m benchmarks.deform
    python -m benchmarks.deform --saved
"""

from __future__ import annotations

import sys

import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from benchmarks.common import median_ms
from blendseg.ops.deform import deform_conv2d

SHAPES = [(256, (50, 76), 1), (128, (69, 69), 1), (128, (138, 138), 2)]  # channels, (H, W), stride


def saved_bytes(fn, *inputs: torch.Tensor) -> int:
    """Bytes an op's autograd graph keeps for its backward beyond its own inputs (alive anyway)."""
    own = {t.untyped_storage().data_ptr() for t in inputs}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in own:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return sum(seen.values())


def deform_layers(preset: str, size: tuple[int, int]) -> list[tuple[int, int, int, int, int]]:
    """(in channels, out channels, H, W, stride) of every deformable conv of the preset's backbone at ``size``."""
    from blendseg.modeling.core.layers import DeformConv2dNorm
    from blendseg.zoo import build_model, get_preset

    model = build_model(get_preset(preset).model).to("meta")
    shapes = []
    for m in model.modules():
        if isinstance(m, DeformConv2dNorm):
            m.register_forward_pre_hook(lambda mod, args: shapes.append((*args[0].shape[1:], mod)))
    backbone = getattr(model, "fcos", model).backbone
    with torch.no_grad():
        backbone(torch.zeros(1, 3, *size, device="meta"))
    return [(c, m.weight.shape[0], h, w, m.stride) for c, h, w, m in shapes]


def saved_table(preset: str = "blendmask_r101_dcni3_5x", size: tuple[int, int] = (800, 1216), batch: int = 8) -> None:
    layers = deform_layers(preset, size)
    grid_total = tv_total = 0
    for cin, cout, h, w, stride in sorted(set(layers)):
        n = layers.count((cin, cout, h, w, stride))
        ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
        x = torch.randn(1, cin, h, w, requires_grad=True)
        weight = torch.randn(cout, cin, 3, 3, requires_grad=True)
        offset, mask = torch.randn(1, 18, ho, wo, requires_grad=True), torch.rand(1, 9, ho, wo, requires_grad=True)
        ours = saved_bytes(lambda *a, s=stride: deform_conv2d(*a[:3], None, s, 1, 1, a[3]), x, offset, weight, mask)
        ref = saved_bytes(lambda *a, s=stride: tv_deform_conv2d(*a[:3], None, s, 1, 1, a[3]), x, offset, weight, mask)
        grid_total, tv_total = grid_total + n * batch * ours, tv_total + n * batch * ref
        print(f"| {n} x {cin}->{cout} at {h}x{w}, stride {stride} | {n * batch * ours / 2**20:.0f} MiB | "
              f"{n * batch * ref / 2**20:.0f} MiB |")  # fmt: skip
    print(f"| all {len(layers)} layers, batch {batch} | {grid_total / 2**30:.2f} GiB | {tv_total / 2**30:.2f} GiB |")


def main() -> None:
    if "--saved" in sys.argv:
        print("| deformable convs | grid_sample form keeps | torchvision's op keeps |\n|---|---|---|")
        saved_table()
        return
    torch.manual_seed(0)
    print("| channels | input | stride | torchvision ms | blendseg ms | speed-up |\n|---|---|---|---|---|---|")
    with torch.inference_mode():
        for c, (h, w), stride in SHAPES:
            x, weight = torch.randn(1, c, h, w), torch.randn(c, c, 3, 3) * 0.01
            ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
            offset, mask = torch.randn(1, 18, ho, wo), torch.rand(1, 9, ho, wo)
            ref = median_ms(lambda: tv_deform_conv2d(x, offset, weight, None, stride, 1, 1, mask), 3)  # noqa: B023
            ours = median_ms(lambda: deform_conv2d(x, offset, weight, None, stride, 1, 1, mask), 3)  # noqa: B023
            print(f"| {c} | {h}x{w} | {stride} | {ref:.1f} | {ours:.1f} | {ref / ours:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
