"""A census of host synchronisations: the operators of a region of code that make the host wait for the device.

On a GPU an operator whose result the host must read (a tensor's value as a Python number, an output whose shape
depends on the data, a copy to or from pageable host memory) stops the host until the device has caught up, so the
host cannot queue the next kernels while the device works. ``torch.cuda.set_sync_debug_mode`` reports them, but only
on a GPU. The census sees the same operators at the dispatcher, on any device, so a CPU test can hold a training
step's count to a ceiling:

    with SyncCensus() as census:
        train_step(...)
    census.total, census.counts  # {"aten._local_scalar_dense": 3, "aten.nonzero": 2, ...}

What counts (the operators torch's CUDA backend synchronises in):

- the value read on the host: ``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``, ``if t:``, ``torch.equal``,
  ``.tolist()``, ``.numpy()`` (on a GPU the ``.cpu()`` before it);
- outputs whose size is data-dependent: ``nonzero``, boolean-mask indexing (``x[mask]``, ``x[mask] = v``),
  ``masked_select``, ``unique``, ``repeat_interleave`` without ``output_size``;
- copies between host and device memory (``.to(device)``, ``.cpu()``).

Not counted as syncs, but in ``copies``: tensors made from Python data (``torch.tensor(list)``, ``x[:, [0, 2]]``),
which on a GPU are copies to the device from pageable memory (staged, no wait: CUDA's cudaMemcpyAsync), and cost a
copy each; Python scalars (``x[m] = 1``) are kernel arguments, not copies.

On a CPU the census cannot tell host tensors from would-be device ones: a ``.item()`` of a tensor that stays on the
host on a GPU too (an optimiser's ``step`` count) counts. ``pause()`` / ``resume()`` (or :meth:`skip_optimizer`)
leave such code out.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

# operators that read a value on the host or size their output by the data
SYNCING = {
    aten._local_scalar_dense.default: "aten._local_scalar_dense",
    aten.nonzero.default: "aten.nonzero",
    aten.masked_select.default: "aten.masked_select",
    aten.equal.default: "aten.equal",
    aten.is_nonzero.default: "aten.is_nonzero",
    aten._unique2.default: "aten.unique",
    aten.unique_dim.default: "aten.unique",
    aten.unique_consecutive.default: "aten.unique",
    aten.repeat_interleave.Tensor: "aten.repeat_interleave",
}


class SyncCensus(TorchDispatchMode):
    """Counts, by operator, the host synchronisations of the code run inside it (see the module's docstring);
    ``total`` is their sum. ``stacks``: also keep the Python stack of each (``where`` lists them), to find them."""

    def __init__(self, stacks: bool = False) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.copies = 0
        self.counting = True
        self.stacks = stacks
        self.where: list[tuple[str, str]] = []

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = SYNCING.get(func)
        if func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is not None:
            name = None
        if name is None and func in (aten._to_copy.default, aten.copy_.default):
            name = _host_device_copy(func, args, kwargs)
        if name is None and func is aten.lift_fresh.default and args[0].dim() > 0:
            self.copies += 1  # from Python data (torch.tensor(list), x[:, [0, 2]]): a copy to the device, no wait
        if name is None and func in (aten.index.Tensor, aten.index_put_.default, aten.index_put.default):
            name = "boolean mask indexing" if any(_is_mask(i) for i in args[1]) else None
        if name is not None and self.counting:
            self._note(name)
        return func(*args, **kwargs)

    def __enter__(self):
        self._saved = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}
        for name, method in self._saved.items():  # not dispatched: read the whole tensor on the host
            setattr(torch.Tensor, name, self._counted(name, method))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, method in self._saved.items():
            setattr(torch.Tensor, name, method)
        return super().__exit__(*exc)

    def _counted(self, name: str, method):
        def call(tensor, *args, **kwargs):
            self._note(f"Tensor.{name}")
            return method(tensor, *args, **kwargs)

        return call

    def _note(self, name: str) -> None:
        self.counts[name] += 1
        if self.stacks:
            import traceback

            frames = [f for f in traceback.extract_stack()[:-3] if "torch/" not in f.filename]
            self.where.append((name, "".join(traceback.format_list(frames[-4:]))))

    def pause(self, *args) -> None:
        self.counting = False

    def resume(self, *args) -> None:
        self.counting = True

    def skip_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Leave ``optimizer.step`` out: torch's optimisers keep their step counts on the host (unless
        ``capturable``), so what they read on a CPU run is no wait on a GPU."""
        optimizer.register_step_pre_hook(self.pause)
        optimizer.register_step_post_hook(self.resume)

    def report(self) -> str:
        """One line: the total and the count of each operator."""
        by_op = ", ".join(f"{k} {v}" for k, v in self.counts.most_common())
        return f"{self.total} syncs ({by_op}); {self.copies} copies from Python data"


def _is_mask(index) -> bool:
    return index is not None and index.dtype in (torch.bool, torch.uint8)


def _host_device_copy(func, args, kwargs) -> str | None:
    """A copy between host memory and a device's, by the devices of the source and the destination."""
    if func is aten._to_copy.default:
        src, dst = args[0].device, kwargs.get("device") or args[0].device
    else:
        dst, src = args[0].device, args[1].device
    if (src.type == "cpu") != (torch.device(dst).type == "cpu"):
        return "copy host <-> device"
    return None
