"""Pre-labels for annotation tools: ``predict --save-coco`` writes a COCO dataset and ``--save-txt`` YOLO labels;
both read back by blendseg's own readers (as training would) with every instance, its class and its mask."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

import blendseg
from blendseg.cli import main
from blendseg.data.coco import open_split
from blendseg.ops.rle import decode


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.slow
def test_predictions_saved_as_coco_and_yolo_read_back_with_their_masks(trained, overfit_data, tmp_path, capsys):
    ckpt = trained("blendmask_tiny_test") / "weights" / "last.pt"
    images = sorted((overfit_data.parent / "train" / "images").iterdir())[:3]
    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), *map(str, images), "--out", str(out), "--conf", "0.5", "--save-coco",
                 "--save-txt", "--no-draw"]) == 0  # fmt: skip
    model = blendseg.load(ckpt)
    results = {p.name: model.predict(str(p), conf=0.5)[0] for p in images}
    assert sum(len(r) for r in results.values()) >= 3
    # COCO: the folder reads as a CVAT export (annotations/ + images/), nothing to fix
    assert main(["data", "check", str(out / "coco")]) == 0
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out
    coco = json.loads((out / "coco" / "annotations" / "instances_default.json").read_text())
    assert sorted(im["file_name"] for im in coco["images"]) == sorted(results)
    for im in coco["images"]:
        r, anns = results[im["file_name"]], [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        assert len(anns) == len(r) and [a["score"] for a in anns] == pytest.approx(r.scores.tolist(), abs=1e-4)
        for a, mask, label in zip(anns, r.masks.numpy(), r.labels.tolist()):
            assert a["category_id"] == model.categories.thing_ids[label]
            assert _iou(decode(a["segmentation"], im["height"], im["width"]).astype(bool), mask) >= 0.9
    # YOLO: labels/ beside a copy of the images, read by the YOLO reader
    shutil.copytree(images[0].parent, out / "images", ignore=lambda d, names: [n for n in names if
                                                                              n not in results])  # fmt: skip
    names = dict(enumerate(model.categories.thing_names))
    (out / "data.yaml").write_text(yaml.safe_dump({"train": "images", "names": names}))
    ds = open_split(out / "data.yaml", "train", with_masks=True)
    for info in ds.images:
        r, target = results[info["file_name"].split("/")[-1]], ds.get_target(info)
        assert target["labels"].tolist() == r.labels.tolist()
        for got, mask in zip(target["masks"].numpy().astype(bool), r.masks.numpy()):
            assert _iou(got, mask) >= 0.9
