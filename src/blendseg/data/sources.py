"""Where a dataset's splits are and how each is read: a data.yaml, or an annotation tool's export folder as it is,
and one reader per annotation format behind :func:`read_split`, which gives every format as a checked COCO dict.

``data.yaml`` is the ultralytics shape extended for COCO JSON::

    path: datasets/mydata            # root; relative to the yaml file when not absolute (default: its folder)
    train: {images: images/train, annotations: annotations/instances_train.json}
    val:   {images: images/val,   annotations: annotations/instances_val.json}
    names: auto                      # or {0: person, ...}; auto reads the JSON categories

or ultralytics' own (``train: images/train``: YOLO labels in ``labels/`` beside ``images/``). A relative path that
does not exist and starts with ``../`` is tried without it, as ultralytics does for Roboflow's exports
(``train: ../train/images`` beside the data.yaml).

A folder instead of a data.yaml (:func:`load_data`) is recognised by its layout:

- a data.yaml (or ``*.yaml`` naming train) inside it;
- Roboflow COCO: ``train/``, ``valid/``, ``test/``, each with ``_annotations.coco.json`` beside its images;
- CVAT COCO 1.0: ``annotations/*.json`` and ``images/`` (``instances_<subset>.json``; one file is the whole data).

A dataset folder without a val split gets one (a data.yaml is taken as written): :data:`HOLDOUT` of the
train split's images, grouped by source image where their names show copies of one (Roboflow's
``<name>_<ext>.rf.<hash>.<ext>``), chosen by a seeded hash, so the same files every time.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import yaml

from ..errors import DataError
from .check import Problem, check_coco, drop_unused_categories, load_json, raise_on_errors

HOLDOUT = 0.1  # the fraction of train's image groups made into val when the data has none
ROBOFLOW_COPY = re.compile(r"\.rf\.[0-9a-f]{16,}$")  # Roboflow's suffix on each augmented / re-exported copy


@dataclass(frozen=True)
class Split:
    """One split: its images, its annotations in ``format`` (a key of :data:`READERS`) and, for panoptic data, the
    COCO panoptic JSON and its PNG folder (the instances may then be omitted: they are derived from the PNGs).
    ``part`` ("train" or "val") takes that part of the split (a dataset without val: :func:`holdout`)."""

    images: Path
    annotations: Path | None = None
    format: str = "coco"
    panoptic: Path | None = None
    panoptic_masks: Path | None = None
    part: str | None = None


@dataclass(frozen=True)
class DataSpec:
    """A dataset: splits by name, the class names (None: read from the annotations), where it was described."""

    root: Path
    splits: dict[str, Split]
    names: list[str] | None
    source: str = ""  # the data.yaml or folder, for messages
    notes: tuple[str, ...] = ()  # what was assumed (a layout recognised, a val split made)


def load_data(path: str | os.PathLike) -> DataSpec:
    """The :class:`DataSpec` of a data.yaml, or of a dataset folder in one of the layouts above (a val split made
    when it has none)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such data.yaml or dataset folder")
    if not path.is_dir():
        return _data_yaml(path)  # its splits as written: a data.yaml without val trains without evaluation
    spec = _folder(path)
    if "train" in spec.splits and "val" not in spec.splits and spec.splits["train"].panoptic is None:
        train = spec.splits["train"]
        splits = {**spec.splits, "train": replace(train, part="train"), "val": replace(train, part="val")}
        note = f"no val split: {HOLDOUT:.0%} of train's images (grouped by source image, seeded) held out as val"
        spec = replace(spec, splits=splits, notes=(*spec.notes, note))
    return spec


def _resolve(root: Path, value: str) -> Path:
    """``root / value``, or without a leading ``../`` when that does not exist and this does (ultralytics' rule
    for Roboflow's data.yaml files)."""
    p = Path(os.path.abspath(root / value))  # links kept: YOLO labels are found beside the images' path as given
    if not p.exists() and value.startswith("../") and (root / value[3:]).exists():
        return Path(os.path.abspath(root / value[3:]))
    return p


def _data_yaml(path: Path) -> DataSpec:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a mapping with path / train / val / names")
    root = Path(str(raw.get("path") or "."))
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    splits = {}
    for name in ("train", "val", "test"):
        s = raw.get(name)
        if s is None:
            continue
        if isinstance(s, str):  # ultralytics: an image folder or list, labels/ beside images/
            splits[name] = Split(_resolve(root, s), format="yolo")
            continue
        if not isinstance(s, dict) or "images" not in s or not ("annotations" in s or "panoptic" in s):
            raise DataError(
                f"{path}: '{name}' must be {{images: DIR, annotations: FILE.json}} (and/or panoptic: FILE.json, "
                "panoptic_masks: DIR)"
            )
        if ("panoptic" in s) != ("panoptic_masks" in s):
            raise DataError(f"{path}: '{name}' needs both panoptic (the JSON) and panoptic_masks (its PNG folder)")
        opt = {
            k: _resolve(root, str(s[k])) if s.get(k) else None for k in ("annotations", "panoptic", "panoptic_masks")
        }
        splits[name] = Split(_resolve(root, str(s["images"])), **opt)
    names = raw.get("names", "auto")
    if isinstance(names, dict):
        names = [str(names[k]) for k in sorted(names)]
    elif names == "auto" or names is None:
        names = None
    elif isinstance(names, list):
        names = [str(n) for n in names]
    else:
        raise DataError(f"{path}: names must be 'auto', a list or a {{index: name}} mapping")
    if names is None and any(s.format == "yolo" for s in splits.values()):
        raise DataError(f"{path}: YOLO-format splits need names ({{0: name, ...}} or a list): label files hold indices")
    return DataSpec(root, splits, names, str(path))


SUBSETS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _folder(folder: Path) -> DataSpec:
    yamls = sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))
    for y in yamls:
        try:
            raw = yaml.safe_load(y.read_text())
        except (yaml.YAMLError, OSError, UnicodeDecodeError):
            continue
        if isinstance(raw, dict) and "train" in raw:
            return replace(_data_yaml(y), notes=(f"{folder}: read {y.name}",))
    roboflow = {SUBSETS[d.name]: d for d in sorted(folder.iterdir()) if d.name in SUBSETS and d.is_dir()}
    roboflow = {k: d for k, d in roboflow.items() if (d / "_annotations.coco.json").is_file()}
    if roboflow:
        splits = {k: Split(d, d / "_annotations.coco.json") for k, d in roboflow.items()}
        return DataSpec(folder.resolve(), splits, None, str(folder), (f"{folder}: Roboflow COCO layout",))
    jsons = sorted((folder / "annotations").glob("*.json")) if (folder / "annotations").is_dir() else []
    if jsons and (folder / "images").is_dir():
        images = (folder / "images").resolve()
        if len(jsons) == 1:
            splits = {"train": Split(images, jsons[0].resolve())}
        else:
            splits = {}
            for j in jsons:
                subset = re.sub(r"^instances_|\.json$", "", j.name).lower()
                name = next((v for k, v in SUBSETS.items() if subset == k or subset.startswith(k)), None)
                if name is None or name in splits:
                    raise DataError(
                        f"{folder}: cannot tell which split {j.name} is (instances_train / _val / _test.json); "
                        "write a data.yaml naming each"
                    )
                splits[name] = Split(images, j.resolve())
        return DataSpec(folder.resolve(), splits, None, str(folder), (f"{folder}: CVAT COCO layout",))
    raise DataError(
        f"{folder}: a folder without a data.yaml, and not an export layout blendseg knows (Roboflow COCO: "
        "train/_annotations.coco.json; CVAT COCO: annotations/*.json + images/)"
    )


def group_key(file_name: str) -> str:
    """The source image a file is a copy of: Roboflow's ``.rf.<hash>`` suffix (and extension) left out."""
    return ROBOFLOW_COPY.sub("", Path(file_name).with_suffix("").as_posix())


def holdout(data: dict, part: str, seed: int = 0) -> dict:
    """The ``part`` ("train" or "val") of a COCO dict split by image group (:func:`group_key`): val is the
    :data:`HOLDOUT` fraction of groups (at least one) first in the order of a seeded hash of their keys."""
    groups = sorted(
        {group_key(im["file_name"]) for im in data["images"]},
        key=lambda g: hashlib.sha1(f"{seed}/{g}".encode()).hexdigest(),
    )
    val = set(groups[: max(1, round(HOLDOUT * len(groups)))]) if len(groups) > 1 else set()
    images = [im for im in data["images"] if (group_key(im["file_name"]) in val) == (part == "val")]
    ids = {im["id"] for im in images}
    return {**data, "images": images, "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}


Reader = Callable[[DataSpec, Split], "tuple[dict | None, Path, list[Problem]]"]


def _read_coco(spec: DataSpec, s: Split) -> tuple[dict | None, Path, list[Problem]]:
    if s.annotations is None:  # panoptic only: its instances come from the PNGs (data.panoptic.CocoPanoptic)
        return None, s.images, [Problem("error", spec.source, f"{s.images}: no instances JSON (annotations:)")]
    data, probs = load_json(s.annotations)
    return data, s.images, probs


def _read_yolo(spec: DataSpec, s: Split) -> tuple[dict | None, Path, list[Problem]]:
    from .yolo import yolo_to_coco

    data, probs = yolo_to_coco(s.images, spec.names, spec.root)
    return data, spec.root, probs


# one reader per annotation format: (spec, split) -> (COCO dict or None, the folder file_name is relative to,
# problems); a new format is a module with a reader, added here
READERS: dict[str, Reader] = {"coco": _read_coco, "yolo": _read_yolo}


@functools.lru_cache(maxsize=8)
def _annotated(path: str, stamp: tuple[int, int]) -> frozenset:
    data, _ = load_json(path)
    anns = data["annotations"] if data else []
    return frozenset(
        a.get("category_id") for a in anns if isinstance(a, dict) and isinstance(a.get("category_id"), int)
    )


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def read_split(
    spec: DataSpec, name: str, strict: bool = False, check_files: bool = True, decode: bool = False
) -> tuple[dict, Path, list[Problem]]:
    """Split ``name`` as a checked COCO dict (:func:`~blendseg.data.check.check_coco`'s fixes applied: warnings,
    or errors when ``strict``; categories that no split annotates dropped), the folder its ``file_name`` values
    are relative to, and every problem found. Missing image files are skipped (``check_files``); ``decode``: every
    image decoded too (``data check``)."""
    s = spec.splits[name]
    if s.format not in READERS:
        raise DataError(f"{spec.source}: split '{name}' has format {s.format!r}; known: {', '.join(READERS)}")
    data, images_dir, probs = READERS[s.format](spec, s)
    where = str(s.annotations) if s.format == "coco" else f"{s.images} (YOLO labels)"
    if data is None:
        return {"images": [], "annotations": [], "categories": []}, images_dir, probs
    files = s.annotations is not None and s.format == "coco"
    if files:  # the categories any split annotates (the others parsed once per process)
        used = set(_annotated(str(s.annotations), _stamp(s.annotations)))
        for other in spec.splits.values():
            if other.format == "coco" and other.annotations is not None and other.annotations.is_file():
                used |= _annotated(str(other.annotations), _stamp(other.annotations))
    data, found = check_coco(data, where, images_dir if check_files else None, decode, strict)
    probs += found
    if files:
        data, dropped = drop_unused_categories(data, used, where, strict)
        probs += dropped
    if s.part is not None:
        data = holdout(data, s.part)
    return data, images_dir, probs


def report(problems: list[Problem], stacklevel: int = 2) -> None:
    """Raise the errors (:func:`~blendseg.data.check.raise_on_errors`), else warn each fix once."""
    raise_on_errors(problems)
    for p in problems:
        warnings.warn(str(p), stacklevel=stacklevel + 1)


def require_split(spec: DataSpec, split: str, purpose: str = "") -> None:
    """A :class:`DataError` naming the data (``spec.source``) when it has no ``split`` (``purpose``: what for)."""
    if split not in spec.splits:
        raise DataError(f"{spec.source}: no '{split}' split{purpose} (has: {', '.join(spec.splits) or 'none'})")
