"""What ``predict`` accepts, as a stream of images: files, folders, globs, videos, PIL images, numpy arrays, and
lists or iterators of these (a generator of camera frames is read one frame at a time).

Images are read by the one image reader (EXIF applied, any mode to RGB); files that cannot be read are skipped
with a warning naming them, so one bad photo does not end a batch. Videos are read frame by frame with OpenCV (the
optional ``blendseg[video]`` extra), so memory stays flat over any length.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..data.images import is_image_file, read_image
from ..errors import DataError, MissingExtra

Source = Union[str, os.PathLike, Image.Image, np.ndarray, list, tuple, Iterable]
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


@dataclass
class Item:
    """One image of a source: (3, H, W) uint8 RGB, its file (None for in-memory images) and, for video frames,
    the frame index, the video's frame rate and frame count."""

    image: Tensor
    path: str | None = None
    frame: int | None = None
    fps: float | None = None
    num_frames: int | None = None


def is_video_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def media_paths(source: str | os.PathLike) -> list[Path]:
    """The image and video files a path names: itself, a folder's (sorted, not recursive) or a glob's matches."""
    p = Path(source)
    if p.is_dir():
        return sorted(f for f in p.iterdir() if is_image_file(f) or is_video_file(f))
    if p.is_file():
        return [p]
    if any(ch in str(source) for ch in "*?["):
        found = (Path(f) for f in glob.glob(str(source), recursive=True))
        return sorted(f for f in found if is_image_file(f) or is_video_file(f))
    raise FileNotFoundError(f"{source}: no such image, video, folder or glob match")


def iter_source(source: Source, on_skip: Callable[[str], None] | None = None) -> Iterator[Item]:
    """Every image (video frame) of ``source``; unreadable files are skipped with a warning (or
    ``on_skip(message)``)."""
    if isinstance(source, (list, tuple, Iterator)):  # an iterator (generator) is consumed as the results are asked for
        for item in source:
            yield from iter_source(item, on_skip)
        return
    if isinstance(source, (Image.Image, np.ndarray)):
        yield Item(read_image(source))
        return
    for path in media_paths(source):
        try:
            if is_video_file(path):
                yield from iter_video(path)
            else:
                yield Item(read_image(path), str(path))
        except DataError as e:
            if on_skip is None:
                warnings.warn(f"{e}; skipped", stacklevel=2)
            else:
                on_skip(f"{e}; skipped")


def iter_video(path: str | os.PathLike) -> Iterator[Item]:
    """The frames of a video file, one at a time (OpenCV decodes BGR; frames come out RGB)."""
    cv2 = require_cv2()
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot open video")
    fps = _fps(cv2, cap)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    try:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            image = torch.from_numpy(np.ascontiguousarray(frame[..., ::-1])).permute(2, 0, 1)
            yield Item(image, str(path), index, fps, count)
            index += 1
    finally:
        cap.release()


def video_fps(path: str | os.PathLike) -> float:
    """A video file's frame rate (25 where the file does not say)."""
    cv2 = require_cv2()
    cap = cv2.VideoCapture(str(path))
    try:
        return _fps(cv2, cap)
    finally:
        cap.release()


def _fps(cv2, cap) -> float:
    return float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0


def require_cv2():
    """OpenCV, or an ImportError saying how to install it."""
    try:
        import cv2
    except ImportError:
        raise MissingExtra(
            "videos are read and written with OpenCV: pip install 'blendseg[video]' (opencv-python-headless)"
        ) from None
    return cv2
