"""Host synchronisations: the census sees each kind of operator that makes the host wait for a GPU, and one training
step of each method stays under its ceiling (issue 36; before it, 18 a step for the FCOS methods and 128 for YOLACT
on these batches, plus the training loop's eight reads of the losses)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.host_syncs import census
from blendseg.engine.syncs import SyncCensus
from blendseg.zoo import suite_presets


def test_the_census_counts_each_kind_of_wait():
    x = torch.rand(6)
    with SyncCensus() as c:
        float(x[0])
        x.tolist()
        (x > 0.5).nonzero()
        x[x > 0.5]
        x.masked_fill(x > 0.5, 0).sum()  # no wait
        torch.tensor([1.0, 2.0])  # a copy, not a wait
        x[1] = 3.0  # a scalar argument
        torch.arange(4).index_fill_(0, torch.tensor([1]), 0)
    assert c.counts == {"aten._local_scalar_dense": 1, "Tensor.tolist": 1, "aten.nonzero": 1,
                        "boolean mask indexing": 1}  # fmt: skip
    assert c.copies == 2
    assert torch.Tensor.tolist is not c._counted  # put back
    c.pause()
    with c:
        float(x[0])
    assert c.total == 4


# the ceiling of one step, with batches of 4: FCOS's positives (nonzero) and the logged losses (one copy to the host);
# YOLACT also reads its positives per image for the mask loss; polygon targets read the boxes once an image
CEILINGS = [
    ("fcos_tiny_test", (), 2),
    ("blendmask_tiny_test", (), 2),
    ("blendmask_tiny_test", ("data.mask_format=polygon",), 2 + 4),
    ("meinst_tiny_test", (), 2),
    ("yolact_tiny_test", (), 3),
    ("yolact_tiny_test", ("model.yolact.maskiou=true",), 3),
]


assert {p for p, _, _ in CEILINGS} == set(suite_presets()), "a ceiling for every arch"


@pytest.mark.parametrize("preset,overrides,ceiling", CEILINGS, ids=[f"{p}{'+' if o else ''}" for p, o, _ in CEILINGS])
def test_a_training_step_waits_for_the_device_a_bounded_number_of_times(preset, overrides, ceiling, synth_data):
    counted, steps = census(preset, synth_data, steps=2, overrides=overrides, stacks=True)
    per_step = counted.total / steps
    where = "\n".join(f"{name}:\n{stack}" for name, stack in counted.where)
    assert 1 <= per_step <= ceiling, f"{counted.report()} over {steps} steps, from:\n{where}"
    assert counted.counts["Tensor.tolist"] >= steps  # the losses read once a step: the census is not blind
