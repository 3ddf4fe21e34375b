"""Processes and their devices: rank, world size, init from torchrun's environment, each process's device, and the
project's only cross-process communication.

Every collective of blendseg goes through this module, so each one meets its backend's rules in one place:

- tensors are reduced on :func:`comm_device` (the process's CUDA device under NCCL, which accepts no CPU tensor;
  the CPU under Gloo) and come back on the device they came from;
- Python objects (evaluation results, RNG states) are gathered to rank 0 only, over Gloo (a Gloo group beside an
  NCCL default group, as detectron2 does), so they never occupy GPU memory and the other ranks keep nothing.
"""

from __future__ import annotations

import datetime
import os
import warnings

import torch
import torch.distributed as dist
from torch import Tensor

_OPS = {"sum": "SUM", "min": "MIN", "max": "MAX"}
_object_group = None  # the Gloo group for object collectives (created on first use, by every rank)
_timeout: datetime.timedelta | None = None  # the process group's collective timeout (init_from_env)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def backend() -> str:
    """The default process group's backend ("nccl", "gloo", ...), "" without one."""
    return str(dist.get_backend()) if is_dist() else ""


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"``: the GPU when CUDA is available, else the CPU; anything else as ``torch.device`` reads it."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def process_device(device: torch.device, local_rank: int, world_size: int) -> torch.device:
    """The device this process trains on. Under torchrun (``world_size`` > 1) each process takes its own GPU,
    ``cuda:LOCAL_RANK``, whatever index ``device`` names (one index for every rank would put them all on one GPU);
    choose the GPUs with ``CUDA_VISIBLE_DEVICES``. One process keeps ``cuda:N`` as given (``cuda``: GPU 0)."""
    if device.type != "cuda":
        return device
    if world_size <= 1:
        return torch.device("cuda", device.index or 0)
    if device.index is not None and device.index != local_rank and local_rank == 0:
        warnings.warn(
            f"device {device} under torchrun: each process uses its own GPU (cuda:LOCAL_RANK); "
            "choose the GPUs with CUDA_VISIBLE_DEVICES",
            stacklevel=2,
        )
    return torch.device("cuda", local_rank)


def init_from_env(device_type: str, timeout_minutes: float = 60.0) -> tuple[int, int]:
    """Initialise the default process group when launched by torchrun (``WORLD_SIZE`` > 1).

    Returns (rank, local_rank). Uses NCCL on CUDA (after making ``cuda:LOCAL_RANK`` the current device) and Gloo
    on CPU. ``timeout_minutes``: how long a collective waits for the other processes (NCCL's default, 10 minutes,
    is shorter than rank 0's COCO evaluation and report on a large val set; detectron2 sets 30).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or is_dist():
        return get_rank(), int(os.environ.get("LOCAL_RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    name = "nccl" if device_type == "cuda" else "gloo"
    if name == "nccl":
        torch.cuda.set_device(local_rank)
    global _timeout
    _timeout = datetime.timedelta(minutes=timeout_minutes)
    dist.init_process_group(backend=name, timeout=_timeout)
    return dist.get_rank(), local_rank


def _current_cuda_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device())


def comm_device() -> torch.device:
    """Where communication tensors live: the current CUDA device under NCCL, the CPU otherwise."""
    return _current_cuda_device() if backend() == "nccl" else torch.device("cpu")


def all_reduce(t: Tensor, op: str = "sum") -> Tensor:
    """``t`` reduced over processes (``op``: sum, min or max), as a new tensor on ``t``'s device (``t`` itself on
    one process). Communicated on :func:`comm_device`; values only (no gradient flows through)."""
    if get_world_size() == 1:
        return t
    buf = t.detach().to(comm_device(), copy=True)
    dist.all_reduce(buf, op=getattr(dist.ReduceOp, _OPS[op]))
    return buf.to(t.device)


def reduce_mean(t: Tensor) -> Tensor:
    """Mean of ``t`` over processes (``t`` itself on one process)."""
    if get_world_size() == 1:
        return t
    return all_reduce(t, "sum") / get_world_size()


def reduce_host(values: list[float], op: str = "sum") -> list[float]:
    """Python numbers reduced over processes (``op``: sum, mean, min or max) on the host, over Gloo: no device is
    involved, so a CUDA process does not wait for its GPU (an NCCL collective of host numbers would copy them to the
    GPU and back behind the queued kernels)."""
    if get_world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=getattr(dist.ReduceOp, _OPS["sum" if op == "mean" else op]), group=_objects_group())
    return (t / get_world_size() if op == "mean" else t).tolist()


def agree(value: float, op: str) -> float:
    """A Python number reduced over processes with "min", "max" or "mean", so every rank takes the same branch
    (:func:`reduce_host`)."""
    return reduce_host([value], op)[0]


def _objects_group():
    """Gloo for object collectives: the default group when it is Gloo, else one Gloo group made once by all ranks."""
    global _object_group
    if backend() == "gloo":
        return None
    if _object_group is None:
        _object_group = dist.new_group(backend="gloo", timeout=_timeout)  # the default group's patience
    return _object_group


def gather_objects(obj: object) -> list[object]:
    """Every process's ``obj`` in rank order on rank 0 (pickled over Gloo); an empty list on the other ranks."""
    if get_world_size() == 1:
        return [obj]
    out: list[object] | None = [None] * get_world_size() if is_main_process() else None
    dist.gather_object(obj, out, dst=0, group=_objects_group())
    return out or []


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every process (pickled over Gloo): what rank 0 read from its disk, for ranks on machines
    without it."""
    if get_world_size() == 1:
        return obj
    box = [obj if is_main_process() else None]
    dist.broadcast_object_list(box, src=0, group=_objects_group())
    return box[0]


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    """Tear the process group down (Gloo can abort at interpreter exit when it is left alive)."""
    global _object_group
    if is_dist():
        dist.barrier()
        dist.destroy_process_group()
    _object_group = None
