"""Reduced-precision inference: the network under autocast (bf16 on CPU, where this machine's avx512_bf16 runs
matrix maths about 3.8x faster than fp32; bf16 or fp16 on CUDA), its outputs back in float32 before decoding,
NMS and mask assembly, which stay in float32 for accuracy."""

from __future__ import annotations

import contextlib
import platform
import warnings
from functools import lru_cache

import torch

from ..structures import map_tensors

PRECISIONS = ("fp32", "bf16", "fp16")
# what an x86 CPU needs for each reduced precision to run at speed (any one of them)
CPU_INSTRUCTIONS = {"bf16": ("avx512_bf16", "amx_bf16"), "int8": ("avx512_vnni", "avx_vnni", "amx_int8")}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str] | None:
    """The CPU's instruction-set flags as Linux lists them (/proc/cpuinfo); None where unknown (another OS or
    architecture: no check is made there)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        with open("/proc/cpuinfo") as f:
            line = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return None
    return frozenset(line.partition(":")[2].split()) or None


def missing_instructions(precision: str, flags: frozenset[str] | None = None) -> str | None:
    """A one-line reason when this CPU (or ``flags``) lacks every instruction set ``precision`` needs to run at
    speed, else None (also where the flags are unknown)."""
    flags = cpu_flags() if flags is None else flags
    need = CPU_INSTRUCTIONS.get(precision)
    if not need or flags is None or flags & set(need):
        return None
    return f"this CPU has none of {' / '.join(need)}, the instructions {precision} needs to run at speed"


def warn_if_slow_on_cpu(precision: str, device: torch.device, what: str) -> None:
    """One warning line when ``what`` runs in ``precision`` on a CPU without the instructions for it."""
    reason = missing_instructions(precision) if device.type == "cpu" else None
    if reason:
        warnings.warn(f"{what}: {reason}; it runs emulated, slower than fp32", stacklevel=3)


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
