"""Tracks as text: the MOTS format (MOTSChallenge / KITTI MOTS, what TrackEval reads), one line per object and frame:

    <frame> <object id> <class id> <image height> <image width> <COCO compressed RLE>

Object ids are ``class_id * 1000 + instance`` (the KITTI MOTS convention), so an id names its class; frames are
numbered from 1 (MOTSChallenge). A sequence folder follows MOTChallenge's layout: ``img1/000001.png``...,
``gt/gt.txt`` and ``seqinfo.ini``.
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..ops.rle import decode, encode


@dataclass(frozen=True)
class MotsObject:
    """One object in one frame: ``frame`` (from 1), ``track_id`` (class * 1000 + instance), ``class_id``, and its
    mask as a COCO RLE dict (``size`` [h, w], ``counts`` as text)."""

    frame: int
    track_id: int
    class_id: int
    rle: dict

    def mask(self) -> np.ndarray:
        return decode(self.rle, *self.rle["size"]).astype(bool)


def mots_object(frame: int, track_id: int, class_id: int, mask: np.ndarray) -> MotsObject:
    rle = encode(np.asarray(mask, dtype=np.uint8))
    return MotsObject(frame, track_id, class_id, {"size": [int(v) for v in rle["size"]], "counts": rle["counts"]})


def write_mots(path: str | os.PathLike, objects: list[MotsObject]) -> Path:
    """``objects`` as a MOTS txt file, in frame then id order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(mots_line(o) for o in sorted(objects, key=lambda o: (o.frame, o.track_id))))
    return path


def mots_line(o: MotsObject) -> str:
    """One object's line of a MOTS file, with its newline."""
    return f"{o.frame} {o.track_id} {o.class_id} {o.rle['size'][0]} {o.rle['size'][1]} {o.rle['counts']}\n"


def read_mots(path: str | os.PathLike) -> list[MotsObject]:
    """The objects of a MOTS txt file; a malformed line is an error naming the file and the line."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(" ")
        if len(parts) != 6:
            raise ValueError(f"{path}:{n}: a MOTS line has 6 fields (frame id class height width rle): {line[:80]!r}")
        frame, track_id, class_id, h, w = (int(v) for v in parts[:5])
        out.append(MotsObject(frame, track_id, class_id, {"size": [h, w], "counts": parts[5]}))
    return out


def write_seqinfo(folder: str | os.PathLike, name: str, frames: int, size: tuple[int, int], fps: float) -> Path:
    """MOTChallenge's ``seqinfo.ini`` for a sequence of ``frames`` PNG frames of ``size`` (h, w) in ``img1/``."""
    info = configparser.ConfigParser()
    info.optionxform = str  # keys as MOTChallenge writes them
    info["Sequence"] = {
        "name": name,
        "imDir": "img1",
        "frameRate": f"{fps:g}",
        "seqLength": str(frames),
        "imWidth": str(size[1]),
        "imHeight": str(size[0]),
        "imExt": ".png",
    }
    path = Path(folder) / "seqinfo.ini"
    with open(path, "w") as f:
        info.write(f, space_around_delimiters=False)
    return path


def find_sequences(path: str | os.PathLike) -> list[Path]:
    """The MOTChallenge sequence folders (``img1/`` and ``gt/gt.txt``) at ``path``: the folder itself, or the
    ones directly inside it (``blendseg data synth --video`` writes such a parent)."""
    path = Path(path)
    is_seq = lambda p: (p / "img1").is_dir() and (p / "gt" / "gt.txt").is_file()  # noqa: E731
    if is_seq(path):
        return [path]
    found = sorted(p for p in path.iterdir() if is_seq(p)) if path.is_dir() else []
    if not found:
        raise FileNotFoundError(
            f"{path}: not a MOTChallenge sequence (img1/ with the frames and gt/gt.txt in the MOTS format) "
            "nor a folder of them"
        )
    return found
