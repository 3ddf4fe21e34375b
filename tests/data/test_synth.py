"""The synthetic dataset: determinism, content the papers' claims need, valid COCO."""

import json

import numpy as np

from blendseg.data.check import check_file
from blendseg.data.synth import CLASSES, render_image, synthesize
from blendseg.ops.rle import decode


def test_deterministic_per_seed_and_index():
    a_img, a_anns = render_image(7, "train", 3, 128, 160, "normal")
    b_img, b_anns = render_image(7, "train", 3, 128, 160, "normal")
    c_img, _ = render_image(8, "train", 3, 128, 160, "normal")
    np.testing.assert_array_equal(a_img, b_img)
    assert json.dumps(a_anns) == json.dumps(b_anns)
    assert a_img.shape != c_img.shape or not np.array_equal(a_img, c_img)


def test_content_and_validity(tmp_path):
    yaml_path = synthesize(tmp_path, train=80, val=0, seed=1, min_size=96, max_size=160, difficulty="hard")
    ann_path = tmp_path / "train" / "annotations.json"
    assert check_file(ann_path, tmp_path / "train" / "images") == []
    coco = json.loads(ann_path.read_text())
    anns = coco["annotations"]
    assert [c["name"] for c in coco["categories"]] == list(CLASSES)
    sizes = {(im["height"], im["width"]) for im in coco["images"]}
    assert any(h != w for h, w in sizes) and all(96 <= s <= 160 for hw in sizes for s in hw)
    assert any(a["iscrowd"] for a in anns), "crowd regions"
    assert any(isinstance(a["segmentation"], list) for a in anns), "polygons"
    assert any(isinstance(a["segmentation"], dict) and not a["iscrowd"] for a in anns), "RLE for occluded / holed"
    with_anns = {a["image_id"] for a in anns}
    assert len(with_anns) < len(coco["images"]), "some images hold no object"
    assert {a["category_id"] for a in anns} == set(range(1, len(CLASSES) + 1))
    areas = [a["area"] for a in anns if not a["iscrowd"]]
    assert min(areas) < 100 and max(areas) > 3000, "scales from tiny to most of the image"
    # occlusion can split an instance: some visible mask has more than one connected part
    split = 0
    for a in anns:
        if isinstance(a["segmentation"], dict) and not a["iscrowd"]:
            im = next(i for i in coco["images"] if i["id"] == a["image_id"])
            m = decode(a["segmentation"], im["height"], im["width"])
            rows = np.flatnonzero(m.any(1))
            if len(rows) and (np.diff(rows) > 1).any():
                split += 1
    assert split > 0
    assert yaml_path.name == "data.yaml"


def test_ring_has_a_hole():
    for i in range(40):
        img, anns = render_image(2, "val", i, 200, 240, "easy")
        for a in anns:
            if a["category_id"] == CLASSES.index("ring") + 1 and not a["iscrowd"]:
                m = decode(a["segmentation"], *img.shape[:2])
                x, y, w, h = (int(round(v)) for v in a["bbox"])
                cy, cx = y + h // 2, x + w // 2
                if m.sum() > 400 and m[cy, cx] == 0:
                    return
    raise AssertionError("no visible ring with an empty centre found")


def _grow(m: np.ndarray, r: int = 2) -> np.ndarray:
    """``m`` dilated by ``r`` pixels (a square)."""
    p = np.pad(m, r)
    return np.logical_or.reduce([p[r + dy : r + dy + m.shape[0], r + dx : r + dx + m.shape[1]]
                                 for dy in range(-r, r + 1) for dx in range(-r, r + 1)])  # fmt: skip


def test_polygons_match_the_painted_masks():
    """A polygon annotation, rasterised by pycocotools, covers the pixels its object was painted on (the panoptic
    render's segment of that object: segments follow the annotations' order) up to the edge pixels the two
    rasterisers disagree on (each within 2 px of the other); its area and bbox are those of the painted mask."""
    checked = 0
    for i in range(20):
        img, anns, ids, segments = render_image(4, "train", i, 128, 192, "normal", panoptic=True)
        h, w = img.shape[:2]
        for a, seg in zip(anns, segments):
            if not isinstance(a["segmentation"], list):
                continue
            painted = ids == seg["id"]
            poly = decode(a["segmentation"], h, w).astype(bool)  # pycocotools' rasterisation
            # they disagree on edge pixels only (PIL fills the outline too): each lies within 2 px of the other
            assert not (poly & ~_grow(painted)).any() and not (painted & ~_grow(poly)).any(), (i, a["category_id"])
            iou = (poly & painted).sum() / (poly | painted).sum()
            floor = 0.85 if painted.sum() >= 1000 else 0.6 if painted.sum() >= 200 else 0.0  # edges weigh on small ones
            assert iou > floor, (i, a["category_id"], float(iou))
            assert a["area"] == painted.sum() and seg["bbox"] == [round(v) for v in a["bbox"]]
            checked += 1
    assert checked >= 20


def test_object_scale_makes_large_images_of_small_objects():
    """``object_scale``: a 640 x 640 picture holds about (640 / 160)^2 = 16 times the objects of a 160-px one, sized
    as a 160-px image's (the same median, the largest below what a 640-px image's can reach); without it the seed's
    image is unchanged."""
    small = [a for i in range(6) for a in render_image(3, "val", i, 160, 160, "normal")[1]]
    large = [a for i in range(6) for a in render_image(3, "val", i, 640, 640, "normal", object_scale=160)[1]]
    assert len(large) > 8 * len(small)
    side = lambda anns: np.array([max(a["bbox"][2], a["bbox"][3]) for a in anns])  # noqa: E731
    assert 0.5 < np.median(side(large)) / np.median(side(small)) < 2 and side(large).max() < 0.42 * 640
    plain = render_image(3, "val", 0, 160, 160, "normal")
    assert np.array_equal(plain[0], render_image(3, "val", 0, 160, 160, "normal", False, None)[0])
