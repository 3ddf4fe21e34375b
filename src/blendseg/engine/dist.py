"""Process-group helpers: rank, world size, init from torchrun's environment, cross-process reductions."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def init_from_env(device: str) -> tuple[int, int]:
    """Initialise the default process group when launched by torchrun (``WORLD_SIZE`` > 1).

    Returns (rank, local_rank). Uses NCCL on CUDA and Gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or is_dist():
        return get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return dist.get_rank(), local_rank


def reduce_mean(t: Tensor) -> Tensor:
    """Mean of ``t`` over processes (``t`` itself on one process)."""
    if not is_dist() or get_world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / get_world_size()


def all_gather_objects(obj: object) -> list[object]:
    if not is_dist() or get_world_size() == 1:
        return [obj]
    out: list[object] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    """Tear the process group down (Gloo can abort at interpreter exit when it is left alive)."""
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()
