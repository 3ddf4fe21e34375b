"""Reduced-precision inference: the network under autocast (bf16 on CPU, where this machine's avx512_bf16 runs
matrix maths about 3.8x faster than fp32; bf16 or fp16 on CUDA), its outputs back in float32 before decoding,
NMS and mask assembly, which stay in float32 for accuracy."""

from __future__ import annotations

import contextlib

import torch

from ..structures import map_tensors

PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(precision: str, device: torch.device):
    """The context the network runs in for ``precision`` on ``device`` (fp32: none)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device; on CPU use bf16")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def to_float32(obj):
    """``obj`` with every reduced-precision tensor inside (dataclass fields, lists, tuples, dicts) as float32."""
    return map_tensors(obj, lambda t: t.float() if t.dtype in (torch.bfloat16, torch.float16) else t)
