"""``python -m torch.distributed.run ... tests/engine/nccl_standin.py train ...``: ``blendseg.cli`` in a torchrun
process under NCCL's rules, on a machine without GPUs.

The process group is Gloo, but blendseg sees NCCL: its backend reads "nccl" and its CUDA device is the lazy device
(``torch._lazy``'s TorchScript backend: a device other than the CPU that computes). Every tensor collective called
through ``torch.distributed`` on the default group refuses a CPU tensor as NCCL does, and otherwise runs on Gloo
through a CPU copy; on blendseg's own Gloo group (host numbers, :func:`blendseg.dist.reduce_host`) it takes CPU
tensors only.
Object collectives must name a Gloo group of their own (on NCCL's default group they would pickle onto the GPU), and
only ``gather_object`` (to rank 0) and ``broadcast_object_list`` (from rank 0) are allowed; nothing all-gathers.
At the end each rank prints one line: ``standin rank R: T tensor collectives on lazy:0, H on the host, O object
collectives``.

With ``BLENDSEG_RNG_LOG=DIR`` each rank writes ``DIR/rank<R>.txt``: the sha1 of every torch RNG state it restores.
With ``BLENDSEG_HIDE_RUN=DIR`` rank 1 sees no file under DIR (another node without the run folder on its disk):
``Path.is_file`` says no and reading a checkpoint there fails.
"""

from __future__ import annotations

import hashlib
import os
import sys

import torch
import torch._lazy.ts_backend
import torch.distributed as dist

torch._lazy.ts_backend.init()

from blendseg import dist as bdist  # noqa: E402
from blendseg.cli import main  # noqa: E402
from blendseg.engine import fit as bfit  # noqa: E402
from blendseg.engine import train as btrain  # noqa: E402

STANDIN = torch.device("lazy", 0)
counts = {"tensor": 0, "host": 0, "object": 0}


def _tensor_collective(name: str):
    real = getattr(dist, name)

    def run(tensor, *args, **kwargs):
        group = kwargs.get("group")
        if group is not None and group is not dist.group.WORLD:  # blendseg's Gloo group: host numbers
            if tensor.device.type != "cpu":
                raise RuntimeError(f"{name} on the Gloo group with a {tensor.device} tensor (NCCL stand-in)")
            counts["host"] += 1
            return real(tensor, *args, **kwargs)
        if tensor.device.type == "cpu":
            raise RuntimeError(f"{name}: No backend type associated with device type cpu (NCCL stand-in)")
        counts["tensor"] += 1
        buf = tensor.cpu()
        work = real(buf, *args, **kwargs)
        tensor.copy_(buf)
        return work

    return run


def _refused(name: str):
    def run(*args, **kwargs):
        raise RuntimeError(
            f"torch.distributed.{name} is not emulated by the NCCL stand-in: blendseg should not need it"
        )

    return run


real_gather_object = dist.gather_object


def _gather_object(obj, object_gather_list=None, dst=0, group=None, **kwargs):
    if group is None or group is dist.group.WORLD:
        raise RuntimeError("gather_object on the default (NCCL) group: object collectives belong on a Gloo group")
    counts["object"] += 1
    return real_gather_object(obj, object_gather_list, dst=dst, group=group, **kwargs)


real_broadcast_object_list = dist.broadcast_object_list


def _broadcast_object_list(object_list, src=0, group=None, **kwargs):
    if group is None or group is dist.group.WORLD:
        raise RuntimeError("broadcast_object_list on the default (NCCL) group: object collectives belong on Gloo")
    counts["object"] += 1
    return real_broadcast_object_list(object_list, src=src, group=group, **kwargs)


def _hide_run(folder: str) -> None:
    """Rank 1 sees no file under ``folder``."""
    import pathlib

    from blendseg.engine import checkpoint

    real_is_file, real_load = pathlib.Path.is_file, checkpoint.load_checkpoint
    inside = lambda p: os.path.abspath(p).startswith(os.path.abspath(folder))  # noqa: E731
    pathlib.Path.is_file = lambda self: False if inside(self) else real_is_file(self)

    def load(path, *args, **kwargs):
        if inside(path):
            raise FileNotFoundError(f"{path} (hidden from rank 1 by the stand-in)")
        return real_load(path, *args, **kwargs)

    checkpoint.load_checkpoint = bfit.load_checkpoint = load


def install() -> None:
    bdist.backend = lambda: "nccl" if bdist.is_dist() else ""
    bdist._current_cuda_device = lambda: STANDIN
    for name in ("all_reduce", "broadcast", "reduce"):
        setattr(dist, name, _tensor_collective(name))
    for name in ("all_gather", "all_gather_into_tensor", "reduce_scatter", "reduce_scatter_tensor", "all_to_all"):
        setattr(dist, name, _refused(name))
    for name in ("all_gather_object", "scatter_object_list"):
        setattr(dist, name, _refused(name))
    dist.gather_object = _gather_object
    dist.broadcast_object_list = _broadcast_object_list
    if os.environ.get("BLENDSEG_HIDE_RUN") and os.environ.get("RANK") == "1":
        _hide_run(os.environ["BLENDSEG_HIDE_RUN"])
    log = os.environ.get("BLENDSEG_RNG_LOG")
    if log:
        real_set = btrain.set_rng_state

        def set_and_log(state: dict, device: torch.device) -> None:
            digest = hashlib.sha1(state["torch"].numpy().tobytes()).hexdigest()
            with open(os.path.join(log, f"rank{os.environ.get('RANK', '0')}.txt"), "a") as f:
                f.write(digest + "\n")
            real_set(state, device)

        btrain.set_rng_state = set_and_log


if __name__ == "__main__":
    install()
    code = main(sys.argv[1:])
    rank = os.environ.get("RANK", "0")
    print(f"standin rank {rank}: {counts['tensor']} tensor collectives on {STANDIN}, {counts['host']} on the host, "
          f"{counts['object']} object collectives", flush=True)  # fmt: skip
    sys.exit(code)
