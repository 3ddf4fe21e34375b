"""When blendseg trades a kernel for a repeatable one: under ``torch.use_deterministic_algorithms(True)`` (the
``deterministic=true`` run setting) on a GPU, the ops whose CUDA kernels accumulate with atomics, so that two runs
drift apart (and which PyTorch refuses in its strict mode), run as compositions of deterministic ops instead:

=================================  ===============================================  ==================================
op                                 CUDA kernel that is not repeatable               used instead
=================================  ===============================================  ==================================
bilinear ``F.interpolate``          ``upsample_bilinear2d_backward``                 two matrix products with the
                                                                                    interpolation weights
                                                                                    (:func:`~.resize.bilinear_resize`)
deformable-conv sampling            ``grid_sampler_2d_backward`` (and torchvision's  four gathers of the neighbours
                                    ``deform_conv2d`` backward)                      (:func:`~.deform.deform_conv2d`)
cross entropy                       ``nll_loss`` / ``nll_loss2d`` forward            log-softmax and a gather
                                                                                    (:func:`~.losses.cross_entropy`)
=================================  ===============================================  ==================================

torchvision's ``roi_align`` switches to its own deterministic implementation in that mode on CUDA; ``roi_pool``
(only the RoIPool ablation uses it) has none. Global average pooling (DeepLabV3+'s ASPP) is a mean in PyTorch
already, on every device. Outside that mode, and on the CPU, whose kernels for these ops are
deterministic already (and faster), nothing changes. :func:`everywhere` makes the CPU take the GPU's deterministic
path too: that is how the tests check on a CPU what a GPU runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

_everywhere = False


def wanted(x: Tensor) -> bool:
    """Whether ops on ``x`` take the deterministic path (deterministic mode on, and a GPU or :func:`everywhere`)."""
    return torch.are_deterministic_algorithms_enabled() and (_everywhere or x.device.type != "cpu")


@contextlib.contextmanager
def everywhere() -> Iterator[None]:
    """Within the block, the deterministic path is taken on the CPU too (when deterministic mode is on)."""
    global _everywhere
    before, _everywhere = _everywhere, True
    try:
        yield
    finally:
        _everywhere = before
