"""Batching: collate into a padded ImageBatch, and the train / eval loaders (optionally distributed).

Training data is reproducible and resumable by construction: the sampler's order is a function of (seed, epoch),
each sample's augmentation randomness a function of (seed, epoch, index) (the sampler hands the dataset
``(epoch, index)`` pairs), so neither the worker processes' RNG states nor where a run was interrupted matter:
:class:`EpochBatches` restarts an epoch at any batch.
"""

from __future__ import annotations

import functools
import math
import random

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, Sampler, SequentialSampler

from ..dist import get_rank, get_world_size
from ..errors import DataError
from ..structures import ImageBatch, pad_images


def collate(batch: list[tuple[Tensor, dict]], size_divisibility: int = 32) -> tuple[ImageBatch, list[dict]]:
    """Pad the images of a batch to one (N, 3, Hp, Wp) tensor, Hp and Wp multiples of ``size_divisibility``: uint8
    when the images are (the model normalises on its device), float32 when an augmentation made them float
    (YOLACT's photometric distortion)."""
    return pad_images([im for im, _ in batch], size_divisibility), [t for _, t in batch]


class _Wrapped(Dataset):
    """A dataset seen through a wrapper: same length, and the wrapped one's attributes (aspect_ratios, images, ...)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)


class TrainSamples(_Wrapped):
    """Training samples indexed by ``(epoch, index)``: the augmentations' Python RNG is seeded from (seed, epoch,
    index) for the sample (and restored after), so runs repeat exactly whatever the workers. A sample whose image
    cannot be read (or differs from its JSON size) is replaced by the next readable one, so batches stay full; the
    replacement's target carries ``skipped`` (the errors, each naming the file and image id) for the main process
    to report, as workers are other processes. ``strict``: raise the error instead."""

    def __init__(self, dataset: Dataset, seed: int = 0, strict: bool = False, max_tries: int = 32) -> None:
        super().__init__(dataset)
        self.seed, self.strict, self.max_tries = seed, strict, max_tries

    def __getitem__(self, key: tuple[int, int] | int) -> tuple[Tensor, dict]:
        epoch, idx = key if isinstance(key, tuple) else (0, key)
        skipped: list[str] = []
        state = random.getstate()
        try:
            for k in range(self.max_tries):
                j = (idx + k) % len(self.dataset)
                random.seed(f"{self.seed}/{epoch}/{j}")  # str seeds hash deterministically (sha512)
                try:
                    image, target = self.dataset[j]
                except DataError as e:
                    if self.strict:
                        raise
                    skipped.append(str(e))
                    continue
                return image, ({**target, "skipped": skipped} if skipped else target)
        finally:
            random.setstate(state)
        raise DataError(f"{self.max_tries} unreadable images in a row from index {idx}; the last: {skipped[-1]}")


class EvalSamples(_Wrapped):
    """Evaluation data that reports bad files instead of stopping: an image that cannot be read comes back as a
    small black placeholder whose target carries ``skipped`` (the error); the evaluation gives it no detections,
    so its ground truth still counts (as misses) and the file is listed. ``strict``: raise the error instead."""

    def __init__(self, dataset: Dataset, strict: bool = False) -> None:
        super().__init__(dataset)
        self.strict = strict

    def __getitem__(self, idx: int) -> tuple[Tensor, dict]:
        try:
            return self.dataset[idx]
        except DataError as e:
            if self.strict:
                raise
            info = self.dataset.images[idx]
            target = {"image_id": torch.tensor(info["id"]), "orig_size": torch.tensor([info["height"], info["width"]])}
            return torch.zeros(3, 32, 32, dtype=torch.uint8), {**target, "skipped": [str(e)]}


class EpochSampler(DistributedSampler):
    """``(epoch, index)`` pairs of one process's share of an epoch: DistributedSampler's permutation from
    seed + epoch, padded to a multiple of the process count and strided over ranks (one process included)."""

    def __iter__(self):
        return ((self.epoch, i) for i in super().__iter__())


def repeat_factors(dataset: Dataset, threshold: float) -> list[float]:
    """Per image, detectron2's repeat factor (LVIS): max over its classes c of max(1, sqrt(threshold / f(c))), where
    f(c) is the fraction of the dataset's images that contain c (crowd regions left out); 1 for an empty image."""
    per_image = [{a["category_id"] for a in dataset.anns[im["id"]] if not a.get("iscrowd", 0)} for im in dataset.images]
    counts: dict[int, int] = {}
    for cats in per_image:
        for c in cats:
            counts[c] = counts.get(c, 0) + 1
    n = max(len(per_image), 1)
    rc = {c: max(1.0, math.sqrt(threshold / (k / n))) for c, k in counts.items()}
    return [max((rc[c] for c in cats), default=1.0) for cats in per_image]


class RepeatFactorSampler(EpochSampler):
    """:class:`EpochSampler` with each image repeated by its repeat factor r: floor(r) times plus once more with
    probability frac(r), drawn per epoch from (seed, epoch) (stochastic rounding, as detectron2), then shuffled and
    strided over ranks. Its length is the expected count."""

    def __init__(self, dataset: Dataset, factors: list[float], num_replicas: int, rank: int, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed)
        self.factors = torch.tensor(factors, dtype=torch.float64)
        expected = int(round(float(self.factors.sum())))
        self.num_samples = math.ceil(expected / num_replicas)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        whole = self.factors.floor()
        reps = whole + (torch.rand(len(self.factors), generator=g, dtype=torch.float64) < self.factors - whole)
        indices = torch.repeat_interleave(torch.arange(len(self.factors)), reps.long())
        indices = indices[torch.randperm(len(indices), generator=g)].tolist()
        total = math.ceil(len(indices) / self.num_replicas) * self.num_replicas
        indices += indices[: total - len(indices)]  # pad to a multiple of the process count
        return ((self.epoch, i) for i in indices[self.rank : total : self.num_replicas])


class EpochBatches(Sampler):
    """The training batch sampler: batches of ``batch_sampler`` for the current epoch, starting ``start`` batches
    in (a resumed run continues the interrupted epoch where it stopped; the first epoch after it starts at 0)."""

    def __init__(self, batch_sampler: Sampler) -> None:
        self.batch_sampler, self.start = batch_sampler, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.batch_sampler.sampler.set_epoch(epoch)  # BatchSampler and GroupedBatchSampler both hold it
        self.start = start

    def __iter__(self):
        for i, batch in enumerate(self.batch_sampler):
            if i >= self.start:
                yield batch
        self.start = 0

    def __len__(self) -> int:
        return len(self.batch_sampler)


class GroupedBatchSampler(Sampler):
    """detectron2's aspect-ratio grouping as a batch sampler: indices from ``sampler`` go to the bucket of their
    group (landscape / portrait); a bucket that reaches ``batch_size`` is yielded, leftovers at the end of an epoch
    are dropped (training). Fewer padded pixels per batch than mixing orientations."""

    def __init__(self, sampler: Sampler, group_ids: list[int], batch_size: int) -> None:
        self.sampler, self.group_ids, self.batch_size = sampler, group_ids, batch_size

    def __iter__(self):
        buckets: dict[int, list[int]] = {}
        for idx in self.sampler:
            bucket = buckets.setdefault(self.group_ids[idx[1] if isinstance(idx, tuple) else idx], [])
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                yield list(bucket)
                bucket.clear()

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size


def build_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 2,
    size_divisibility: int = 32,
    seed: int = 0,
    group_by_aspect: bool = False,
    strict: bool = False,
    pin_memory: bool = False,
    repeat_threshold: float = 0.0,
) -> DataLoader:
    """Train: shuffled per (seed, epoch), each process its share, ``batch_size`` per process, the last partial batch
    dropped, optionally grouping landscape and portrait images (``group_by_aspect``, the dataset needs
    ``aspect_ratios()``), unreadable images skipped (``strict``: an error); ``loader.batch_sampler`` is an
    :class:`EpochBatches` (``set_epoch(epoch, start)``). Eval: in order, each process a strided shard, unreadable
    images reported (:class:`EvalSamples`); ``repeat_threshold`` > 0: training images repeated by their
    classes' rarity (:class:`RepeatFactorSampler`). ``pin_memory``: batches in page-locked memory (for a CUDA model: the
    copies to the GPU then run asynchronously)."""
    world = get_world_size()
    collate_fn = functools.partial(collate, size_divisibility=size_divisibility)
    if not train:
        sampler = list(range(get_rank(), len(dataset), world)) if world > 1 else SequentialSampler(dataset)
        return DataLoader(
            EvalSamples(dataset, strict),
            batch_size=batch_size,
            sampler=sampler,
            num_workers=num_workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,  # across evaluations
        )
    if repeat_threshold > 0:  # rare classes' images repeated (the dataset needs COCO ``images`` / ``anns``)
        sampler = RepeatFactorSampler(dataset, repeat_factors(dataset, repeat_threshold), world, get_rank(), seed)
    else:
        sampler = EpochSampler(dataset, world, get_rank(), shuffle=True, seed=seed)
    if group_by_aspect:
        groups = [int(r > 1.0) for r in dataset.aspect_ratios()]
        batches = GroupedBatchSampler(sampler, groups, batch_size)
    else:
        batches = BatchSampler(sampler, batch_size, drop_last=True)
    return DataLoader(
        TrainSamples(dataset, seed, strict),
        batch_sampler=EpochBatches(batches),
        num_workers=num_workers,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),  # the workers' base seed: not drawn from the global RNG
    )
