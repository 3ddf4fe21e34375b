"""What annotation tools export, read as a person meant it: each fix a warning with a count and an example (an
error under strict), each unusable annotation an error naming it, and no traceback whatever the JSON holds."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest

from blendseg.data.check import check_coco
from blendseg.data.coco import CocoInstances
from blendseg.errors import DataError

from .test_coco import _good, _write


def _ann(data: dict, aid: int) -> dict:
    return next(a for a in data["annotations"] if a["id"] == aid)


@pytest.mark.parametrize(
    ("mutate", "fix", "expect"),
    [
        # a home-made export: the polygon clicked 3 px past the left border, its box past it too
        (lambda a: a.update(bbox=[-3, 20, 14, 10], segmentation=[[-3, 20, 11, 20, 11, 30, -3, 30]]),
         "clipped to it", lambda a: a["bbox"] == [0, 20, 11, 10] and min(a["segmentation"][0][0::2]) == 0),
        # CVAT: a bbox and area that do not describe the polygon a person drew
        (lambda a: a.update(bbox=[5, 5, 30, 2], area=9999), "bbox(es) missing or unlike their masks",
         lambda a: a["bbox"] == [1, 20, 10, 10] and 90 <= a["area"] <= 110),
        (lambda a: a.pop("bbox"), "bbox(es) missing", lambda a: a["bbox"] == [1, 20, 10, 10]),
        (lambda a: a.update(area=400.0), "area(s) missing or unlike", lambda a: 90 <= a["area"] <= 110),
        (lambda a: a["segmentation"].append([1, 1, 2, 2]), "ring(s) of fewer than 3 distinct points",
         lambda a: len(a["segmentation"]) == 1),
        # a box-only export (CVAT detection project): segmentation [] -> no mask, the box kept
        (lambda a: a.update(segmentation=[]), "box-only", lambda a: "segmentation" not in a and a["bbox"][2] == 10),
        (lambda a: a.update(segmentation=[], bbox=[45, 35, 10, 10]), "clipped to it",
         lambda a: a["bbox"] == [45, 35, 5, 5]),
    ],
)  # fmt: skip
def test_each_fix_is_one_warning_and_an_error_under_strict(tmp_path, mutate, fix, expect):
    coco = _good()
    mutate(_ann(coco, 2))
    path, img_dir = _write(tmp_path, coco, images=((1, 40, 50), (2, 40, 50)))
    raw = json.loads(path.read_text())
    data, problems = check_coco(raw, str(path), img_dir)
    assert not [p for p in problems if p.severity == "error"], problems
    found = [p for p in problems if fix in p.message]
    assert len(found) == 1 and found[0].severity == "warning" and str(path) in str(found[0]), problems
    assert "annotation id 2" in found[0].message or fix == "box-only"
    assert expect(_ann(data, 2)), _ann(data, 2)
    assert raw == json.loads(path.read_text())  # the parsed input is not changed
    strict = check_coco(raw, str(path), img_dir, strict=True)[1]
    if fix != "box-only":  # a box-only dataset is valid COCO: nothing to refuse
        assert any(p.severity == "error" and fix in p.message and "data.strict" in p.message for p in strict)
    ds = CocoInstances(path, img_dir, with_masks="segmentation" in _ann(data, 2))  # loads and gives its targets
    assert len(ds[0][1]["boxes"]) == 3


def test_a_missing_image_is_skipped_with_its_annotations(tmp_path):
    coco = _good()
    coco["images"][1]["file_name"] = "gone.png"
    coco["annotations"].append({**_ann(coco, 2), "id": 9, "image_id": 2})
    path, img_dir = _write(tmp_path, coco, images=((1, 40, 50),))
    data, problems = check_coco(json.loads(path.read_text()), str(path), img_dir)
    assert [p.severity for p in problems] == ["warning"] and "1 image file(s) missing" in problems[0].message
    assert "gone.png" in problems[0].message and [im["id"] for im in data["images"]] == [1]
    assert 9 not in {a["id"] for a in data["annotations"]}
    assert check_coco(json.loads(path.read_text()), str(path), img_dir, strict=True)[1][0].severity == "error"


def test_the_five_malformed_ids_that_crashed_the_checker_are_messages():
    for field, where in (("images", "id"), ("annotations", "id"), ("categories", "id"), ("annotations", "image_id"),
                         ("annotations", "category_id")):  # fmt: skip
        for value in ([1], {"a": 1}, None, "1", 1.5, True):
            coco = _good()
            coco[field][0][where] = value
            _, problems = check_coco(coco, "x.json")
            assert any(p.severity == "error" for p in problems), (field, where, value)


def _mutations(rng: random.Random, coco: dict) -> None:
    """One random damage: a field deleted or replaced by a value of another type, anywhere in the file."""
    values = [None, "x", [], [1], {"a": 1}, float("nan"), float("inf"), 1e12, -5, 0, True, [[1, 2]], [1, 2, 3, 4]]
    section = rng.choice(["images", "annotations", "categories"])
    if not isinstance(coco[section], list) or not coco[section] or rng.random() < 0.05:
        coco[section] = rng.choice(values)
        return
    item = rng.choice(coco[section])
    if not isinstance(item, dict) or rng.random() < 0.05:
        coco[section][rng.randrange(len(coco[section]))] = rng.choice(values)
        return
    key = rng.choice(sorted(item))
    if rng.random() < 0.2:
        del item[key]
    elif key == "segmentation" and isinstance(item[key], list) and item[key] and rng.random() < 0.5:
        ring = item[key][0]
        if isinstance(ring, list) and ring:
            ring[rng.randrange(len(ring))] = rng.choice(values)
    else:
        item[key] = rng.choice(values)


def test_fuzzed_coco_files_give_messages_or_fixes_never_a_traceback(tmp_path):
    """300 seeded damaged copies of a valid file: each is read (fixes warned) or refused with messages naming the
    file; what is read loads every image's target."""
    path, img_dir = _write(tmp_path, _good(), images=((1, 40, 50), (2, 40, 50)))
    rng, refused = random.Random(0), 0
    for k in range(300):
        coco = copy.deepcopy(_good())
        for _ in range(rng.randint(1, 3)):
            _mutations(rng, coco)
        path.write_text(json.dumps(coco))
        try:
            ds = CocoInstances(path, img_dir, with_masks=True, check_files=True)
        except DataError as e:
            assert str(path) in str(e), (k, str(e))
            refused += 1
            continue
        except Exception as e:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"mutation {k}: {type(e).__name__}: {e}\n{json.dumps(coco)[:600]}") from e
        for i in range(len(ds)):
            _, target = ds[i]
            assert np.isfinite(target["boxes"].numpy()).all()
    assert 0 < refused < 300  # both kinds met
