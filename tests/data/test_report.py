"""The data report: what a dataset holds against the model, with what to change when a run could not learn."""

from __future__ import annotations

from PIL import Image

from blendseg.data.report import plot_labels, summarize
from blendseg.zoo import get_preset


def _coco(boxes_per_image: list[list[tuple[float, float, int]]], w: int = 1000, h: int = 800) -> dict:
    """Images of w x h with square boxes (side, position, category) each."""
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image, 1):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": w, "height": h})
        for side, pos, cat in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": [pos, pos, side, side],
                         "area": side * side, "iscrowd": 0})  # fmt: skip
    return {"images": images, "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}


def test_small_objects_crowded_images_and_rare_classes_each_get_their_remedy():
    cfg = get_preset("fcos_tiny")  # test-time resize to 256 on the short side: 800 -> 256 is x0.32
    small = [[(12.0, 10 * k, 1) for k in range(120)]] + [[(300.0, 50, 1)] for _ in range(30)] + [[(300.0, 5, 2)]]
    lines = summarize(_coco(small), ["a", "b"], cfg)
    text = "\n".join(lines)
    assert "32 images, 151 instances, 2 classes; image sizes 1000x800 to 1000x800" in text
    assert "max 120" in text and "near or past the model's 100 detections" in text and "post_nms_topk" in text
    assert "120 of 151 objects are smaller than the finest stride (8 px)" in text  # 12 px x 0.32 = 3.8 px
    assert "data.min_size_test=" in text and "by FCOS level" in text
    assert "or tiles: data.tile=256 to train, predict and val with --slice 256" in text  # 800 px >= 2 x 256
    assert "repeat the rare ones: data.repeat_threshold=" in text  # class b: one image in 32
    assert "repeat_threshold" not in "\n".join(summarize(_coco(small), ["a", "b"], cfg, train=False))
    fine = "\n".join(summarize(_coco([[(300.0, 50, 1), (300.0, 60, 2)]] * 4), ["a", "b"], cfg))
    assert "finest stride" not in fine and "detections an image" not in fine and "repeat" not in fine
    assert "longer side" not in "\n".join(summarize(_coco(small), ["a", "b"]))  # no model: no sizes against it


def test_with_tiles_the_sizes_are_those_of_the_tiles():
    """data.tile=256: a 12-px object keeps its size (a 256-px tile is resized by 1), so none is too small."""
    import dataclasses

    cfg = get_preset("fcos_tiny")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, tile=256))
    text = "\n".join(summarize(_coco([[(12.0, 10 * k, 1) for k in range(20)]]), ["a", "b"], cfg))
    assert "after the resize to 256 (max 384) of 256-px tiles: longer side 12 / 12 / 12 px" in text
    assert "finest stride" not in text


def test_labels_png(tmp_path):
    path = plot_labels(_coco([[(100.0, 10, 1), (50.0, 400, 2)]] * 3), ["a", "b"], tmp_path / "labels.png")
    assert Image.open(path).size[0] > 600
