"""Batching: collate into a padded ImageBatch, and the train / eval loaders (optionally distributed)."""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from ..engine.dist import get_rank, get_world_size
from ..structures import ImageBatch, pad_images


def collate(batch: list[tuple[Tensor, dict]], size_divisibility: int = 32) -> tuple[ImageBatch, list[dict]]:
    """Pad the images of a batch to one (N, 3, Hp, Wp) float tensor, Hp and Wp multiples of ``size_divisibility``."""
    images = [im.float() for im, _ in batch]
    return pad_images(images, size_divisibility), [t for _, t in batch]


def build_loader(
    dataset: Dataset,
    batch_size: int,
    train: bool,
    num_workers: int = 2,
    size_divisibility: int = 32,
    seed: int = 0,
) -> DataLoader:
    """Train: shuffled (DistributedSampler over processes, ``batch_size`` per process), dropping the last partial
    batch. Eval: in order, each process a strided shard."""
    world = get_world_size()
    if world > 1 and not train:
        sampler = list(range(get_rank(), len(dataset), world))  # no padding: no image is evaluated twice
    elif world > 1:
        sampler = DistributedSampler(dataset, world, get_rank(), shuffle=True, seed=seed, drop_last=False)
    elif train:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=functools.partial(collate, size_divisibility=size_divisibility),
        drop_last=train,
        persistent_workers=train and num_workers > 0,
    )
