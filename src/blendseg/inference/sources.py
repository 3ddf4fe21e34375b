"""What ``predict`` accepts, as a stream of images: files, folders, globs, PIL images, numpy arrays, lists of these.

Each item is read by the one image reader (EXIF applied, any mode to RGB); files that cannot be read are skipped
with a warning naming them, so one bad photo does not end a batch.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image
from torch import Tensor

from ..data.check import DataError
from ..data.images import is_image_file, read_image

Source = Union[str, os.PathLike, Image.Image, np.ndarray, list, tuple]


def image_paths(source: str | os.PathLike) -> list[Path]:
    """The image files a path names: itself, a folder's images (sorted, not recursive) or a glob's matches."""
    p = Path(source)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if is_image_file(f))
    if p.is_file():
        return [p]
    if any(ch in str(source) for ch in "*?["):
        return sorted(Path(f) for f in glob.glob(str(source), recursive=True) if is_image_file(f))
    raise FileNotFoundError(f"{source}: no such image, folder or glob match")


def iter_images(source: Source, on_skip: Callable[[str], None] | None = None) -> Iterator[tuple[Tensor, str | None]]:
    """(image (3, H, W) uint8 RGB, path or None) for every image of ``source``; unreadable files are skipped with a
    warning (or ``on_skip(message)``)."""
    if isinstance(source, (list, tuple)):
        for item in source:
            yield from iter_images(item, on_skip)
        return
    if isinstance(source, (Image.Image, np.ndarray)):
        yield read_image(source), None
        return
    for path in image_paths(source):
        try:
            image = read_image(path)
        except DataError as e:
            if on_skip is None:
                warnings.warn(f"{e}; skipped", stacklevel=2)
            else:
                on_skip(f"{e}; skipped")
            continue
        yield image, str(path)
