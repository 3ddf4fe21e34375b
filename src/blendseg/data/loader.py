"""Batching: collate into a padded ImageBatch, and the train / eval loaders (optionally distributed)."""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler

from ..engine.dist import get_rank, get_world_size
from ..structures import ImageBatch, pad_images
from .check import DataError


def collate(batch: list[tuple[Tensor, dict]], size_divisibility: int = 32) -> tuple[ImageBatch, list[dict]]:
    """Pad the images of a batch to one (N, 3, Hp, Wp) float tensor, Hp and Wp multiples of ``size_divisibility``."""
    images = [im.float() for im, _ in batch]
    return pad_images(images, size_divisibility), [t for _, t in batch]


class SkipUnreadable(Dataset):
    """Training data that survives bad files: a sample whose image cannot be read (or differs from its JSON size)
    is replaced by the next readable one, so batches stay full; the replacement's target carries ``skipped`` (the
    errors, each naming the file and image id) for the main process to report, as workers are other processes.
    ``strict``: raise the error instead."""

    def __init__(self, dataset: Dataset, strict: bool = False, max_tries: int = 32) -> None:
        self.dataset, self.strict, self.max_tries = dataset, strict, max_tries

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):  # aspect_ratios, class_names, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, idx: int) -> tuple[Tensor, dict]:
        skipped: list[str] = []
        for k in range(self.max_tries):
            try:
                image, target = self.dataset[(idx + k) % len(self.dataset)]
            except DataError as e:
                if self.strict:
                    raise
                skipped.append(str(e))
                continue
            return image, ({**target, "skipped": skipped} if skipped else target)
        raise DataError(f"{self.max_tries} unreadable images in a row from index {idx}; the last: {skipped[-1]}")


class GroupedBatchSampler(Sampler):
    """detectron2's aspect-ratio grouping as a batch sampler: indices from ``sampler`` go to the bucket of their
    group (landscape / portrait); a bucket that reaches ``batch_size`` is yielded, leftovers at the end of an epoch
    are dropped (training). Fewer padded pixels per batch than mixing orientations."""

    def __init__(self, sampler: Sampler, group_ids: list[int], batch_size: int) -> None:
        self.sampler, self.group_ids, self.batch_size = sampler, group_ids, batch_size

    def __iter__(self):
        buckets: dict[int, list[int]] = {}
        for idx in self.sampler:
            bucket = buckets.setdefault(self.group_ids[idx], [])
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                yield list(bucket)
                bucket.clear()

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 2,
    size_divisibility: int = 32,
    seed: int = 0,
    group_by_aspect: bool = False,
) -> DataLoader:
    """Train: shuffled (DistributedSampler over processes, ``batch_size`` per process), dropping the last partial
    batch, optionally grouping landscape and portrait images (``group_by_aspect``, the dataset needs
    ``aspect_ratios()``). Eval: in order, each process a strided shard."""
    world = get_world_size()
    if world > 1 and not train:
        sampler = list(range(get_rank(), len(dataset), world))  # no padding: no image is evaluated twice
    elif world > 1:
        sampler = DistributedSampler(dataset, world, get_rank(), shuffle=True, seed=seed, drop_last=False)
    elif train:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(dataset)
    collate_fn = functools.partial(collate, size_divisibility=size_divisibility)
    if train and group_by_aspect:
        groups = [int(r > 1.0) for r in dataset.aspect_ratios()]
        batches = GroupedBatchSampler(sampler, groups, batch_size)
        return DataLoader(
            dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate_fn,
            persistent_workers=num_workers > 0,
        )  # fmt: skip
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=train,
        persistent_workers=train and num_workers > 0,
    )
