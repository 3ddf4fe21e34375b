"""COCO instances: data.yaml parsing, category-id mapping and the dataset returning (image, target).

``data.yaml`` is the ultralytics shape extended for COCO JSON::

    path: datasets/mydata            # root; relative to the yaml file when not absolute
    train: {images: images/train, annotations: annotations/instances_train.json}
    val:   {images: images/val,   annotations: annotations/instances_val.json}
    names: auto                      # or {0: person, ...}; auto reads the JSON categories
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from ..ops.rle import decode
from .check import DataError, check_coco, load_json, raise_on_errors
from .images import read_image


@dataclass(frozen=True)
class Split:
    """One split of a data.yaml: images, COCO instances JSON and, for panoptic data, the COCO panoptic JSON and its
    PNG folder (the instances may then be omitted: they are derived from the panoptic PNGs)."""

    images: Path
    annotations: Path | None
    panoptic: Path | None = None
    panoptic_masks: Path | None = None
    yolo: bool = False  # ultralytics' layout: ``images`` is a folder (or .txt list) with labels/ beside it


@dataclass(frozen=True)
class DataSpec:
    """A parsed data.yaml: splits by name and the class names (None when ``auto``)."""

    root: Path
    splits: dict[str, Split]
    names: list[str] | None


def load_data_yaml(path: str | os.PathLike) -> DataSpec:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a mapping with path / train / val / names")
    root = Path(raw.get("path") or ".")
    if not root.is_absolute():
        root = (path.parent / root).resolve()
    splits = {}
    for name in ("train", "val", "test"):
        s = raw.get(name)
        if s is None:
            continue
        if isinstance(s, str):  # ultralytics: an image folder or list, labels/ beside images/
            splits[name] = Split(root / s, None, yolo=True)
            continue
        if not isinstance(s, dict) or "images" not in s or not ("annotations" in s or "panoptic" in s):
            raise DataError(
                f"{path}: '{name}' must be {{images: DIR, annotations: FILE.json}} (and/or panoptic: FILE.json, "
                "panoptic_masks: DIR)"
            )
        if ("panoptic" in s) != ("panoptic_masks" in s):
            raise DataError(f"{path}: '{name}' needs both panoptic (the JSON) and panoptic_masks (its PNG folder)")
        opt = {k: root / s[k] if s.get(k) else None for k in ("annotations", "panoptic", "panoptic_masks")}
        splits[name] = Split(root / s["images"], **opt)
    names = raw.get("names", "auto")
    if isinstance(names, dict):
        names = [str(names[k]) for k in sorted(names)]
    elif names == "auto" or names is None:
        names = None
    elif isinstance(names, list):
        names = [str(n) for n in names]
    else:
        raise DataError(f"{path}: names must be 'auto', a list or a {{index: name}} mapping")
    if names is None and any(s.yolo for s in splits.values()):
        raise DataError(f"{path}: YOLO-format splits need names ({{0: name, ...}} or a list): label files hold indices")
    return DataSpec(root, splits, names)


def require_split(spec: DataSpec, where: str | os.PathLike, split: str, purpose: str = "") -> None:
    """A :class:`DataError` naming the data.yaml (``where``) when it has no ``split`` (``purpose``: what for)."""
    if split not in spec.splits:
        raise DataError(f"{where}: no '{split}' split{purpose} (has: {', '.join(spec.splits) or 'none'})")


def open_split(data_yaml: str | os.PathLike, split: str, purpose: str = "", **kwargs) -> CocoInstances:
    """:func:`open_instances` of a split of the data.yaml at ``data_yaml``, checked to exist."""
    spec = load_data_yaml(data_yaml)
    require_split(spec, data_yaml, split, purpose)
    return open_instances(spec, split, str(data_yaml), **kwargs)


def open_instances(spec: DataSpec, split: str, where: str, **kwargs) -> CocoInstances:
    """The :class:`CocoInstances` of a data.yaml split: its COCO JSON, or its YOLO labels read as COCO (broken
    label lines refused as broken annotations are; ``where`` names the data.yaml in messages)."""
    s = spec.splits[split]
    if not s.yolo:
        return CocoInstances(s.annotations, s.images, **kwargs)
    from .yolo import yolo_to_coco

    data, probs = yolo_to_coco(s.images, spec.names, spec.root)
    raise_on_errors(probs)
    for p in probs:
        warnings.warn(str(p), stacklevel=2)
    kwargs.pop("check_files", None)  # the reader has opened every image already
    return CocoInstances(f"{where} ({split}: YOLO labels of {s.images})", spec.root, data=data, **kwargs)


class CocoInstances(torch.utils.data.Dataset):
    """COCO instance annotations as ``(image, target)`` pairs.

    Category ids (sparse, 0- or 1-based) map to contiguous labels ``0..K-1`` in ascending id order;
    ``contiguous_to_cat_id`` maps back for results. Crowd annotations are kept in ``self.coco`` for evaluation
    but left out of training targets, as the reference does.

    ``__getitem__`` returns ``image`` (3, H, W) uint8 RGB and ``target`` with ``boxes`` (M, 4) float32 xyxy,
    ``labels`` (M,) int64, ``masks`` (M, H, W) uint8 when ``with_masks``, ``image_id`` and ``orig_size`` (h, w).

    Args:
        ann_file, images_dir: the split (``data``: the annotations already parsed; ``ann_file`` then names them).
        filter_empty: drop images without non-crowd annotations (training default of the reference).
        transforms: callable ``(image, target) -> (image, target)``.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        images_dir: str | os.PathLike,
        filter_empty: bool = False,
        with_masks: bool = False,
        with_sem_seg: bool = False,
        with_crowd_boxes: bool = False,
        with_polygons: bool = False,
        transforms=None,
        check_files: bool = False,
        data: dict | None = None,
    ) -> None:
        probs: list = []
        if data is None:  # else ``data`` is the parsed file, ``ann_file`` only names it in messages
            data, probs = load_json(ann_file)
        if data is not None:
            probs = check_coco(data, str(ann_file), images_dir if check_files else None, decode=False)
        raise_on_errors(probs)
        self.coco = data
        self.ann_file, self.images_dir = str(ann_file), Path(images_dir)
        cat_ids = sorted(c["id"] for c in data["categories"])
        self.cat_id_to_contiguous = {cid: i for i, cid in enumerate(cat_ids)}
        self.contiguous_to_cat_id = cat_ids
        names = {c["id"]: c.get("name", str(c["id"])) for c in data["categories"]}
        self.class_names = [names[c] for c in cat_ids]
        anns_per_image: dict[int, list[dict]] = {im["id"]: [] for im in data["images"]}
        for a in data["annotations"]:
            anns_per_image[a["image_id"]].append(a)
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self.anns = anns_per_image
        if filter_empty:
            before = len(self.images)
            self.images = [im for im in self.images if any(not a.get("iscrowd", 0) for a in anns_per_image[im["id"]])]
            if not self.images:
                raise DataError(f"{ann_file}: no image has a non-crowd annotation ({before} images)")
        self.with_masks, self.with_sem_seg, self.with_crowd_boxes = with_masks, with_sem_seg, with_crowd_boxes
        self.with_polygons = with_polygons
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.images)

    def read_image(self, info: dict) -> Tensor:
        """(3, H, W) uint8 RGB of an image entry, EXIF orientation applied (``data.images.read_image``)."""
        try:
            return read_image(self.images_dir / info["file_name"])
        except DataError as e:
            raise DataError(f"{e} (image id {info['id']})") from None

    def get_target(self, info: dict) -> dict[str, Tensor]:
        h, w = info["height"], info["width"]
        anns = [a for a in self.anns[info["id"]] if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        labels = torch.tensor([self.cat_id_to_contiguous[a["category_id"]] for a in anns], dtype=torch.int64)
        target = {
            "boxes": boxes,
            "labels": labels,
            "image_id": torch.tensor(info["id"]),
            "orig_size": torch.tensor([h, w]),
        }
        if self.with_masks:
            masks = np.zeros((len(anns), h, w), np.uint8)
            for i, a in enumerate(anns):
                masks[i] = self._mask(a, h, w)
            target["masks"] = torch.from_numpy(masks)
        if self.with_polygons:  # detectron2 MASK_FORMAT "polygon": per instance its rings, None for RLE masks
            target["polygons"] = [
                [np.asarray(p, dtype=np.float64) for p in a["segmentation"]]
                if isinstance(a.get("segmentation"), list)
                else None
                for a in anns
            ]
        if self.with_crowd_boxes:
            crowd = [a["bbox"] for a in self.anns[info["id"]] if a.get("iscrowd", 0)]
            cb = torch.tensor(crowd, dtype=torch.float32).reshape(-1, 4)
            target["crowd_boxes"] = torch.cat([cb[:, :2], cb[:, :2] + cb[:, 2:]], 1)
        if self.with_sem_seg:  # AdelaiDet prepare_thing_sem_from_instance: all annotations, JSON order
            sem = np.zeros((h, w), np.uint8)
            for a in self.anns[info["id"]]:
                sem[self._mask(a, h, w) > 0] = self.cat_id_to_contiguous[a["category_id"]] + 1
            target["sem_seg"] = torch.from_numpy(sem)
        return target

    def _mask(self, ann: dict, h: int, w: int) -> np.ndarray:
        """(h, w) uint8 mask of an annotation; its box, with a warning, when it has no segmentation."""
        if ann.get("segmentation") is not None:
            return decode(ann["segmentation"], h, w)
        warnings.warn(f"{self.ann_file}: annotation id {ann['id']} has no segmentation; using its box", stacklevel=3)
        mask = np.zeros((h, w), np.uint8)
        x, y, bw, bh = ann["bbox"]
        mask[round(y) : round(y + bh), round(x) : round(x + bw)] = 1
        return mask

    def __getitem__(self, idx: int) -> tuple[Tensor, dict[str, Tensor]]:
        info = self.images[idx]
        image, target = self.read_image(info), self.get_target(info)
        if image.shape[-2:] != (info["height"], info["width"]):
            raise DataError(
                f"{self.images_dir / info['file_name']}: image id {info['id']} is {image.shape[-1]}x{image.shape[-2]}, "
                f"the JSON says {info['width']}x{info['height']}"
            )
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def aspect_ratios(self) -> list[float]:
        return [im["width"] / im["height"] for im in self.images]
