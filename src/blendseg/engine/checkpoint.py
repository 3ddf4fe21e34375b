"""Checkpoints as plain dicts of tensors / numbers / strings: atomic writes, ``weights_only`` loads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..weights_io import read_weights

FORMAT_VERSION = 1


class CheckpointError(OSError):
    """A checkpoint could not be written (disk full, unwritable folder); the previous file at the path is intact."""


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (+ format version) to ``path`` atomically: a temporary file in the same folder, flushed to
    disk (fsync), then renamed over ``path`` (and the folder synced), so a kill at any moment leaves either the old
    or the new checkpoint, never a partial one. Failures raise :class:`CheckpointError` naming the path."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except OSError as e:
        kept = "the previous checkpoint there is unchanged" if path.is_file() else "nothing was written"
        raise CheckpointError(f"{path}: cannot write the checkpoint ({e.strerror or e}); {kept}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint (:func:`~blendseg.weights_io.read_weights`: no code is unpickled), on the CPU."""
    ckpt = read_weights(path, "checkpoint")
    if "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path}: not a blendseg checkpoint (needs 'model' and 'config')")
    return ckpt
