"""COCO instances as ``(image, target)`` pairs: the one dataset of every annotation format (each read as a COCO
dict by :func:`blendseg.data.sources.read_split`), with its category-id mapping."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import DataError
from ..ops.masks import mask_extent
from ..ops.rle import decode
from .check import check_coco, load_json
from .images import read_image
from .sources import DataSpec, load_data, read_split, report, require_split


def mask_boxes(masks: Tensor) -> Tensor:
    """(M, 4) float32 xyxy of (M, H, W) masks, past their last pixel (detectron2's ``BitMasks``); an empty mask
    gives an empty box (0, 0, 0, 0)."""
    boxes = torch.zeros(len(masks), 4)
    for i, m in enumerate(masks):
        extent = mask_extent(m)
        if extent is not None:
            y0, x0, y1, x1 = extent
            boxes[i] = torch.tensor([x0, y0, x1, y1], dtype=torch.float32)
    return boxes


def _meets(boxes: Tensor, w: int, h: int, margin: float = 1.0) -> Tensor:
    """(M,) bool: the boxes (M, 4) xyxy that reach into [0, w) x [0, h), by ``margin`` pixels of tolerance."""
    return (boxes[:, 0] < w + margin) & (boxes[:, 2] > -margin) & (boxes[:, 1] < h + margin) & (boxes[:, 3] > -margin)


def open_split(data: str | os.PathLike, split: str, purpose: str = "", **kwargs) -> CocoInstances:
    """:func:`open_instances` of a split of the data.yaml or dataset folder ``data``, checked to exist."""
    spec = load_data(data)
    require_split(spec, split, purpose)
    return open_instances(spec, split, **kwargs)


def open_instances(
    spec: DataSpec, split: str, strict: bool = False, check_files: bool = True, **kwargs
) -> CocoInstances:
    """The :class:`CocoInstances` of a split in any format (:func:`~blendseg.data.sources.read_split`): errors
    raised, each kind of fix warned once (``strict``: fixes are errors); missing images skipped
    (``check_files``)."""
    data, images_dir, problems = read_split(spec, split, strict, check_files)
    report(problems)
    return CocoInstances(f"{spec.source} ({split})", images_dir, data=data, **kwargs)


class CocoInstances(torch.utils.data.Dataset):
    """COCO instance annotations as ``(image, target)`` pairs.

    Category ids (sparse, 0- or 1-based) map to contiguous labels ``0..K-1`` in ascending id order;
    ``contiguous_to_cat_id`` maps back for results. Crowd annotations are kept in ``self.coco`` for evaluation
    but left out of training targets, as the reference does.

    ``__getitem__`` returns ``image`` (3, H, W) uint8 RGB and ``target`` with ``boxes`` (M, 4) float32 xyxy,
    ``labels`` (M,) int64, ``masks`` (M, H, W) uint8 when ``with_masks``, ``image_id`` and ``orig_size`` (h, w).

    Args:
        ann_file, images_dir: the split (``data``: the annotations already parsed and checked, as
            :func:`open_instances` gives them; ``ann_file`` then names them in messages).
        filter_empty: drop images without non-crowd annotations (training default of the reference).
        transforms: callable ``(image, target) -> (image, target)``.
        decode_min_side: > 0: JPEGs of at least twice that short side decoded at 1/2, 1/4 or 1/8 of their size,
            keeping it on the short side (``data.images.read_image``), their targets scaled to match (training:
            the transforms resize to the training size anyway).
        crop: a training crop (:class:`~blendseg.data.crop.InstanceCrop`): ``(boxes, h, w) -> window``; the image
            is cut to the window before the transforms, and its target built inside it.
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
        decode_min_side: int = 0,
        crop=None,
    ) -> None:
        if data is None:  # else ``data`` is checked already, ``ann_file`` only names it in messages
            data, probs = load_json(ann_file)
            if data is not None:
                data, probs = check_coco(data, str(ann_file), images_dir if check_files else None, decode=False)
            report(probs)
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
        box_only = self.box_only() if (with_masks or with_sem_seg) else 0
        if box_only:
            total = sum(not a.get("iscrowd", 0) for a in data["annotations"])
            raise DataError(
                f"{ann_file}: {box_only} of {total} annotation(s) have no mask (box-only); a mask method learns a "
                "mask for every instance: add their polygons, or train a box detector (an fcos_* preset: blendseg "
                "presets)"
            )
        self.with_masks, self.with_sem_seg, self.with_crowd_boxes = with_masks, with_sem_seg, with_crowd_boxes
        self.with_polygons = with_polygons
        self.transforms = transforms
        self.decode_min_side, self.crop = decode_min_side, crop

    def __len__(self) -> int:
        return len(self.images)

    def read_image(self, info: dict, min_side: int = 0) -> Tensor:
        """(3, H, W) uint8 RGB of an image entry, EXIF orientation applied (``data.images.read_image``; a large
        JPEG decoded smaller with ``min_side``)."""
        try:
            return read_image(self.images_dir / info["file_name"], min_side)
        except DataError as e:
            raise DataError(f"{e} (image id {info['id']})") from None

    def boxes(self, info: dict, size: tuple[int, int] | None = None, crowd: bool | None = False) -> Tensor:
        """(M, 4) float32 xyxy of the image's annotations without crowd ones (``crowd`` True: only those; None:
        all), in the pixels of ``size`` (h, w) when given."""
        anns = [a for a in self.anns[info["id"]] if crowd is None or bool(a.get("iscrowd", 0)) == crowd]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        if size is not None and size != (info["height"], info["width"]):
            sx, sy = size[1] / info["width"], size[0] / info["height"]
            boxes *= torch.tensor([sx, sy, sx, sy])
        return boxes

    def get_target(
        self, info: dict, size: tuple[int, int] | None = None, window: tuple[int, int, int, int] | None = None
    ) -> dict[str, Tensor]:
        """The image's target in the pixels of its full size, or of ``size`` (h, w) when it was decoded smaller
        (``decode_min_side``): boxes and polygons scaled, masks rasterised at that size; ``orig_size`` stays the
        file's. ``window`` (x0, y0, x1, y1): the target of that crop, masks cut one at a time; with masks, boxes
        are then their masks' (AdelaiDet's rule for crops), an instance left with no pixel an empty box."""
        h, w = info["height"], info["width"]
        size = size or (h, w)
        sx, sy = size[1] / w, size[0] / h
        anns = [a for a in self.anns[info["id"]] if not a.get("iscrowd", 0)]
        x0, y0, x1, y1 = window or (0, 0, size[1], size[0])
        cut = (slice(y0, y1), slice(x0, x1))
        shift = torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        boxes = self.boxes(info, size) - shift
        labels = torch.tensor([self.cat_id_to_contiguous[a["category_id"]] for a in anns], dtype=torch.int64)
        target = {
            "boxes": boxes,
            "labels": labels,
            "image_id": torch.tensor(info["id"]),
            "orig_size": torch.tensor([h, w]),
        }
        if self.with_masks:
            masks = np.zeros((len(anns), y1 - y0, x1 - x0), np.uint8)
            inside = _meets(boxes, x1 - x0, y1 - y0)  # a crop: what lies outside it is left empty, not decoded
            for i, a in enumerate(anns):
                if inside[i]:
                    masks[i] = self._mask(a, h, w, size)[cut]
            target["masks"] = torch.from_numpy(masks)
            if window is not None:
                target["boxes"] = mask_boxes(target["masks"])
        if self.with_polygons:  # detectron2 MASK_FORMAT "polygon": per instance its rings, None for RLE masks
            scale, offset = np.array([sx, sy]), np.array([x0, y0])
            target["polygons"] = [
                [(np.asarray(p, dtype=np.float64).reshape(-1, 2) * scale - offset).ravel() for p in a["segmentation"]]
                if isinstance(a.get("segmentation"), list)
                else None
                for a in anns
            ]
        if self.with_crowd_boxes:
            target["crowd_boxes"] = self.boxes(info, size, crowd=True) - shift
        if self.with_sem_seg:  # AdelaiDet prepare_thing_sem_from_instance: all annotations, JSON order
            sem = np.zeros(size, np.uint8)
            inside = _meets(self.boxes(info, size, crowd=None) - shift, x1 - x0, y1 - y0)
            for a, meets in zip(self.anns[info["id"]], inside.tolist()):
                if meets:
                    sem[self._mask(a, h, w, size) > 0] = self.cat_id_to_contiguous[a["category_id"]] + 1
            target["sem_seg"] = torch.from_numpy(np.ascontiguousarray(sem[cut]))
        return target

    def _mask(self, ann: dict, h: int, w: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """(h, w) uint8 mask of an annotation (a dataset asked for masks refuses box-only annotations), or at
        ``size``: polygons scaled before they are rasterised, RLE masks decoded and resized (nearest)."""
        segm = ann["segmentation"]
        if size is None or size == (h, w):
            return decode(segm, h, w)
        if isinstance(segm, list):
            sx, sy = size[1] / w, size[0] / h
            return decode([[v * (sx if i % 2 == 0 else sy) for i, v in enumerate(r)] for r in segm], *size)
        return np.asarray(Image.fromarray(decode(segm, h, w)).resize(size[::-1], Image.NEAREST))

    def box_only(self) -> int:
        """How many non-crowd annotations have no mask."""
        return sum("segmentation" not in a for a in self.coco["annotations"] if not a.get("iscrowd", 0))

    def __getitem__(self, idx: int) -> tuple[Tensor, dict[str, Tensor]]:
        info = self.images[idx]
        image = self.read_image(info, self.decode_min_side)
        size, h, w = tuple(image.shape[-2:]), info["height"], info["width"]
        if size in [(-(-h // k), -(-w // k)) for k in (2, 4, 8)] and self.decode_min_side:  # libjpeg's scaled size
            image, target = self._target_of(info, image, size)
        elif size == (h, w):
            image, target = self._target_of(info, image, None)
        else:
            raise DataError(
                f"{self.images_dir / info['file_name']}: image id {info['id']} is {image.shape[-1]}x{image.shape[-2]}, "
                f"the JSON says {info['width']}x{info['height']}"
            )
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _target_of(self, info: dict, image: Tensor, size: tuple[int, int] | None) -> tuple[Tensor, dict]:
        """The image (cut to the training crop's window when there is one: a copy, so a worker does not send
        the whole image with it) and its target."""
        if self.crop is None:
            return image, self.get_target(info, size)
        h, w = image.shape[-2:]
        x0, y0, x1, y1 = self.crop(self.boxes(info, size, crowd=None).numpy(), h, w)  # all, as AdelaiDet
        return image[:, y0:y1, x0:x1].clone(), self.get_target(info, size, (x0, y0, x1, y1))

    def aspect_ratios(self) -> list[float]:
        return [im["width"] / im["height"] for im in self.images]
