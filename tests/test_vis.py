"""Drawings of dense scenes (issue 39): each instance filled in its own colour and outlined in its class's, labels
no taller than a third of their box, and the options ultralytics users know (--hide-labels, --hide-conf,
--line-width, --classes)."""

from __future__ import annotations

import numpy as np
import torch

from blendseg.structures import DenseMasks, Instances
from blendseg.vis import INSTANCE_PALETTE, PALETTE, DrawStyle, outline, render_detections


def _two_touching_of_one_class(h: int = 60, w: int = 80) -> Instances:
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 10:40, 10:40] = True
    masks[1, 10:40, 40:70] = True
    boxes = torch.tensor([[10.0, 10, 40, 40], [40, 10, 70, 40]])
    return Instances(boxes, torch.tensor([0.9, 0.8]), torch.tensor([1, 1]), DenseMasks(masks))


def test_neighbours_of_one_class_get_their_own_fill_and_the_class_outline():
    image = torch.zeros(3, 60, 80, dtype=torch.uint8)
    dets = _two_touching_of_one_class()
    plain = np.asarray(render_detections(image, dets, ["a", "b"], 0.0, style=DrawStyle(labels=False, boxes=False)))
    left, right = plain[25, 25], plain[25, 55]  # inside each mask, away from the edges
    assert not np.array_equal(left, right)  # two instances of one class are told apart
    expected = (0.45 * np.array(INSTANCE_PALETTE[0])).astype(np.uint8)
    assert np.abs(left.astype(int) - expected).max() <= 1
    assert tuple(plain[10, 25]) == PALETTE[1]  # the mask's edge in the class's colour


def test_style_options_change_what_is_drawn():
    image = torch.zeros(3, 60, 80, dtype=torch.uint8)
    dets = _two_touching_of_one_class()
    draw = lambda style: np.asarray(render_detections(image, dets, ["a", "b"], 0.0, style=style))  # noqa: E731
    full, no_labels, no_conf = draw(DrawStyle()), draw(DrawStyle(labels=False)), draw(DrawStyle(conf=False))
    assert not np.array_equal(full, no_labels) and not np.array_equal(full, no_conf)
    thin, thick = draw(DrawStyle(labels=False, line_width=1)), draw(DrawStyle(labels=False, line_width=4))
    assert (thick != 0).sum() > (thin != 0).sum()


def test_outline_is_the_edge_band():
    m = np.zeros((9, 9), bool)
    m[2:7, 2:7] = True
    edge = outline(m, 1)
    assert edge.sum() == 16 and not edge[4, 4] and edge[2, 4]
    assert outline(m, 2).sum() == 24


def test_classes_filter_keeps_only_those_classes(checkpoint, tmp_path):
    import json

    from blendseg.cli import main

    frame = tmp_path / "f.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(frame)
    args = ["predict", str(checkpoint), str(frame), "--conf", "0.05", "--save-json", "--hide-labels"]
    assert main([*args, "--out", str(tmp_path / "all")]) == 0
    assert main([*args, "--out", str(tmp_path / "some"), "--classes", "0", "2"]) == 0
    every = json.loads((tmp_path / "all" / "predictions.json").read_text())[0]["instances"]
    some = json.loads((tmp_path / "some" / "predictions.json").read_text())[0]["instances"]
    assert {i["label"] for i in every} - {0, 2}, "the random head predicts other classes too"
    assert some == [i for i in every if i["label"] in (0, 2)]


def test_an_empty_mask_has_no_outline_and_draws_nothing():
    assert outline(np.zeros((0, 0), bool)).shape == (0, 0)
    masks = torch.zeros(1, 20, 30, dtype=torch.bool)
    dets = Instances(torch.tensor([[2.0, 2, 8, 8]]), torch.tensor([0.9]), torch.tensor([0]), DenseMasks(masks))
    render_detections(torch.zeros(3, 20, 30, dtype=torch.uint8), dets, ["a"], 0.0)
