"""The one reader of weight files, below every layer that reads them (backbones, MEInst's PCA, the converters,
``--weights``): ``.safetensors``, or a torch file loaded with ``weights_only=True`` (no code is unpickled); an error
names the file and what is wrong with it."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor


def read_weights(path: str | os.PathLike, what: str = "weights file") -> dict:
    """The file's top-level dict (``what``: how an error names the file's role)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a pickle of code, a truncated file, not a torch file at all
        raise ValueError(f"{path}: not a {what} blendseg can read ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def state_dict_of(obj: dict) -> dict[str, Tensor]:
    """The tensors of a weights dict: a ``model`` / ``state_dict`` entry unwrapped (detectron2's and torchvision's
    training checkpoints), DataParallel's ``module.`` prefix removed, numpy arrays as tensors, other entries
    dropped."""
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
    out = {}
    for k, v in obj.items():
        if torch.is_tensor(v) or hasattr(v, "__array__"):
            out[k.removeprefix("module.")] = torch.as_tensor(v)
    return out


def read_state_dict(path: str | os.PathLike, what: str = "weights file") -> dict[str, Tensor]:
    """:func:`state_dict_of` :func:`read_weights`."""
    return state_dict_of(read_weights(path, what))
