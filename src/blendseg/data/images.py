"""The one image reader of training, evaluation and prediction: any file PIL opens, PIL images and numpy arrays
-> (3, H, W) uint8 RGB, as people see the picture.

- EXIF orientation applied (detectron2's ``read_image`` does the same), so a phone photo stored sideways comes out
  upright; :func:`image_size` gives that oriented size without decoding the pixels.
- Grayscale, palette (with or without transparency), CMYK, RGBA / LA (alpha dropped, as detectron2 and OpenCV do)
  become RGB; 16-bit and 32-bit integer images are scaled to 0..255 (65535 -> 255), not clipped; float images in
  0..1 are scaled by 255.
- A missing, truncated or undecodable file is a :class:`~blendseg.data.check.DataError` naming the file.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..errors import DataError

ORIENTATION = 0x0112  # EXIF tag
SWAPS_SIDES = (5, 6, 7, 8)  # orientations that rotate by 90 degrees


def read_image(source: str | os.PathLike | bytes | Image.Image | np.ndarray, min_side: int = 0) -> Tensor:
    """(3, H, W) uint8 RGB of a file path, encoded bytes, a PIL image or an (H, W[, C]) array (RGB order).

    ``min_side`` > 0: a JPEG at least twice that on its short side is decoded at 1/2, 1/4 or 1/8 of its size
    (libjpeg's DCT scaling, PIL's ``draft``), the smallest that keeps the short side at ``min_side`` or more: a
    22-megapixel photo for a network that sees 800 px decodes several times faster, in a fraction of the memory."""
    if isinstance(source, np.ndarray):
        return torch.from_numpy(np.array(_array_to_rgb(source), copy=True)).permute(2, 0, 1)
    if isinstance(source, Image.Image):
        return _pil_to_tensor(source, "PIL image")
    name = "image bytes" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as pil:
            w, h = pil.size
            if min_side > 0 and pil.format == "JPEG" and min(w, h) >= 2 * min_side:
                r = min_side / min(w, h)
                pil.draft(pil.mode, (math.ceil(w * r), math.ceil(h * r)))
            pil.load()  # decode everything now: truncated data fails here, with the file's name
            return _pil_to_tensor(pil, name)
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise DataError(f"{name}: cannot read image ({type(e).__name__}: {e})") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file as :func:`read_image` returns it (EXIF rotations swap the sides), read
    from the header only."""
    with Image.open(path) as pil:
        w, h = pil.size
        orientation = pil.getexif().get(ORIENTATION, 1)
    return (h, w) if orientation in SWAPS_SIDES else (w, h)


def _pil_to_tensor(pil: Image.Image, name: str) -> Tensor:
    # copies kept to the one into numpy: a 24-megapixel photo is 72 MB per copy
    if pil.getexif().get(ORIENTATION, 1) != 1:
        pil = ImageOps.exif_transpose(pil)
    if pil.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = _array_to_rgb(np.array(pil), pil.mode)
    else:
        if pil.mode == "P" and "transparency" in pil.info:
            pil = pil.convert("RGBA")
        arr = np.array(pil if pil.mode == "RGB" else pil.convert("RGB"))
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name}: unsupported image of mode {pil.mode} and shape {arr.shape}")
    return torch.from_numpy(arr).permute(2, 0, 1)  # HWC memory: resizes run faster


def _array_to_rgb(arr: np.ndarray, mode: str = "") -> np.ndarray:
    """(H, W, 3) uint8 from an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array of any integer or float dtype."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise DataError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(arr.astype(np.float32)) * scale + 0.5, 0, 255).astype(np.uint8)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    # integers wider than 8 bits: 16-bit data (PIL's I;16 and the 32-bit "I" it widens 16-bit PNGs to) scale by
    # 65535 -> 255; larger values by their own range
    top = 65535 if int(arr.max(initial=0)) <= 65535 or mode.startswith("I;16") else int(np.iinfo(arr.dtype).max)
    return (np.clip(arr.astype(np.float64), 0, top) * (255.0 / top) + 0.5).astype(np.uint8)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES
