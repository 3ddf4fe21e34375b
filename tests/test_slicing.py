"""Sliced prediction (issue 39): the tile grid, the merge of instances cut by tile borders (an oracle detector that
segments exactly what a tile shows, so the merge alone is under test), plain prediction's results when the image
fits a tile, a real model's tiles through the batched predictor and the exported runner's path, and memory that
follows the tiles on a 24-megapixel photo."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from blendseg.inference.slicing import SliceSpec, merge_pieces, sliced_instances, tile_rects
from blendseg.structures import DenseMasks, Instances


def test_tiles_cover_the_image_with_the_overlap_asked_and_end_at_its_edges():
    rects = tile_rects(300, 500, 128, 0.25)
    ys, xs = sorted({r[0] for r in rects}), sorted({r[1] for r in rects})
    assert xs[:2] == [0, 96] and xs[-1] == 500 - 128 and ys[-1] == 300 - 128
    assert all(r[2] - r[0] == 128 and r[3] - r[1] == 128 for r in rects)
    covered = np.zeros((300, 500), bool)
    for y0, x0, y1, x1 in rects:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert tile_rects(100, 90, 128, 0.2) == [(0, 0, 100, 90)]  # smaller than a tile: one tile, the image
    assert [r[1] for r in tile_rects(64, 200, 128, 0.2)] == [0, 72]  # a short side is one tile of that side


def oracle(tiles: list[torch.Tensor]) -> list[Instances]:
    """A perfect segmenter: channel 0 holds each object's id (1..), so a tile's instances are exactly the parts of
    objects it shows; label = id % 2, score 0.9 - id / 1000."""
    out = []
    for t in tiles:
        ids = [int(v) for v in t[0].unique() if v > 0]
        masks = torch.stack([t[0] == v for v in ids]) if ids else torch.zeros(0, *t.shape[-2:], dtype=torch.bool)
        boxes = []
        for m in masks:
            ys, xs = m.any(1).nonzero()[:, 0], m.any(0).nonzero()[:, 0]
            boxes.append([float(xs[0]), float(ys[0]), float(xs[-1] + 1), float(ys[-1] + 1)])
        out.append(Instances(torch.tensor(boxes).reshape(-1, 4), torch.tensor([0.9 - i / 1000 for i in ids]),
                             torch.tensor([i % 2 for i in ids], dtype=torch.int64), DenseMasks(masks)))  # fmt: skip
    return out


def scene(h: int = 300, w: int = 400) -> tuple[torch.Tensor, dict[int, np.ndarray]]:
    """An image of objects placed across tile borders and corners (for 128-px tiles, overlap 0.25: tiles start at
    0, 96, 192...), inside an overlap band, a large one spanning three tiles, and two of one class touching."""
    ids = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    ids[(yy - 100) ** 2 + (xx - 112) ** 2 < 30**2] = 1  # over a vertical border and the band
    ids[80:160, 150:380] = 2  # a long bar across three tiles
    ids[200:228, 100:124] = 3  # inside the band shared by two tiles
    ids[(yy - 220) ** 2 / 900 + (xx - 300) ** 2 / 400 < 1] = 4  # over a tile corner
    ids[250:290, 20:60] = 5  # touching object 7, same class
    ids[250:290, 60:90] = 7
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    image[0] = torch.from_numpy(ids)
    return image, {k: ids == k for k in np.unique(ids) if k}


def _ious(masks, truth: np.ndarray) -> np.ndarray:
    return np.array([(m.numpy() & truth).sum() / (m.numpy() | truth).sum() for m in masks])


@pytest.mark.parametrize("full", [False, True])
def test_objects_cut_by_tile_borders_come_back_whole_and_once(full):
    image, truth = scene()
    out = sliced_instances(oracle, image, SliceSpec(128, 0.25, full=full), conf=0.0, max_det=100)
    assert len(out) == len(truth)  # no duplicate in any overlap, no object split in two
    for k, t in truth.items():
        ious = _ious(out.masks, t)
        best = int(ious.argmax())
        assert ious[best] >= 0.9 and int(out.labels[best]) == k % 2, (k, ious)
        ys, xs = np.nonzero(t)
        assert out.boxes[best].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def _piece(tile: int, score: float, y0: int, x0: int, y1: int, x1: int, label: int = 0) -> tuple:
    box = torch.tensor([x0, y0, x1, y1], dtype=torch.float32)
    return tile, box, score, label, (y0, x0, torch.ones(y1 - y0, x1 - x0, dtype=torch.bool))


def test_a_sloppy_piece_over_two_objects_ties_neither():
    """Tiles of columns 0-99 and 60-159. Objects at columns 62-70 (tile 0) and 80-88 (tile 1), and from tile 1 a
    weak piece of their class over columns 60-95: it is taken for neither, so both objects keep their masks and
    it stays a low-scoring instance of its own (union-find over "inside the other" merged all three)."""
    rects = [(0, 0, 100, 100), (0, 60, 100, 160)]
    pieces = [_piece(0, 0.9, 10, 62, 30, 70), _piece(1, 0.8, 10, 80, 30, 88), _piece(1, 0.3, 5, 60, 40, 95)]
    out = merge_pieces(rects, pieces, True, SliceSpec(100, 0.4), 100, (100, 160))
    assert out.scores.tolist() == pytest.approx([0.9, 0.8, 0.3])
    assert out.boxes.tolist() == [[62, 10, 70, 30], [80, 10, 88, 30], [60, 5, 95, 40]]


def test_a_piece_completes_its_object_only_outside_the_tiles_it_already_has():
    """An object over columns 50-120: tile 0 (columns 0-99) sees 50-99, tile 1 (60-159) sees 60-120 but also
    reaches sloppily down to row 40 inside tile 0's part; the merged mask is tile 0's piece plus tile 1's columns
    100-119 only."""
    rects = [(0, 0, 100, 100), (0, 60, 100, 160)]
    sloppy = _piece(1, 0.7, 10, 60, 40, 120)
    sloppy[4][2][20:, 40:] = False  # rows 30-39 only over columns 60-99, inside tile 0
    pieces = [_piece(0, 0.9, 10, 50, 30, 100), sloppy]
    out = merge_pieces(rects, pieces, True, SliceSpec(100, 0.4), 100, (100, 160))
    assert len(out.scores) == 1 and out.boxes.tolist() == [[50, 10, 120, 30]]
    truth = torch.zeros(100, 160, dtype=torch.bool)
    truth[10:30, 50:120] = True
    assert torch.equal(out.masks[0], truth)


def test_a_ragged_piece_at_a_tile_edge_still_joins_its_object():
    """The neighbouring tile's piece one pixel fatter (a real model's edge is not exact): still one object."""

    def fat(tiles):
        out = oracle(tiles)
        for d in out:
            if len(d):
                m = d.masks.probs.clone()
                m[:, :, 1:] |= m[:, :, :-1]
                d.masks = DenseMasks(m)
        return out

    image, truth = scene()
    out = sliced_instances(fat, image, SliceSpec(128, 0.25), conf=0.0, max_det=100)
    assert len(out) == len(truth)


def test_conf_and_max_det_apply_to_the_merged_instances():
    image, truth = scene()
    out = sliced_instances(oracle, image, SliceSpec(128, 0.25), conf=0.8955, max_det=100)
    assert sorted(int(round((0.9 - s) * 1000)) for s in out.scores.tolist()) == [1, 2, 3, 4]  # 0.895 for id 5
    assert len(sliced_instances(oracle, image, SliceSpec(128, 0.25), conf=0.0, max_det=2)) == 2


def test_box_models_merge_by_their_boxes():
    image, truth = scene()

    def boxes_only(tiles):
        return [Instances(d.boxes, d.scores, d.labels) for d in oracle(tiles)]

    out = sliced_instances(boxes_only, image, SliceSpec(128, 0.25), conf=0.0, max_det=100)
    assert out.masks is None and len(out) == len(truth)


def test_a_model_gives_plain_predictions_when_the_image_fits_a_tile_and_tiles_otherwise(checkpoint):
    import blendseg

    model = blendseg.load(checkpoint, device="cpu")
    frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    plain, big = model.predict(frame, conf=0.1)[0], model.predict(frame, conf=0.1, slice=128)[0]
    assert len(plain) > 0 and torch.equal(plain.boxes, big.boxes) and torch.equal(plain.masks, big.masks)
    tiled = model.predict(frame, conf=0.1, slice=SliceSpec(64, 0.25, full=True))[0]
    assert len(tiled) > 0 and tiled.masks.shape == (len(tiled), 96, 128) and "segmentation" in tiled.to_dict()[
        "instances"][0]  # fmt: skip
    with pytest.raises(ValueError, match="at least 32 pixels"):
        model.predict(frame, slice=16)


@pytest.mark.slow  # an export
def test_the_exported_runner_slices_too(checkpoint, tmp_path):
    pytest.importorskip("onnxruntime", reason="blendseg[onnx]")
    import blendseg

    model = blendseg.load(checkpoint, device="cpu")
    onnx = blendseg.load(model.export(out=tmp_path / "m.onnx", conf=0.05))
    frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    pt, ox = (m.predict(frame, conf=0.1, slice=64)[0] for m in (model, onnx))
    assert len(pt) > 0 and len(ox) > 0 and ox.masks.shape == (len(ox), 96, 128)


@pytest.mark.slow  # a memory bound on a child process
def test_a_24_megapixel_photo_sliced_costs_a_few_copies_of_itself(checkpoint, tmp_path):
    import os
    import subprocess
    import sys

    from PIL import Image

    if not hasattr(os, "wait4"):
        pytest.skip("peak RSS of a child process via os.wait4")
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    small.resize((640, 480), Image.BICUBIC).save(tmp_path / "vga.jpg", quality=85)
    small.resize((6000, 4000), Image.BICUBIC).save(tmp_path / "big.jpg", quality=85)

    def peak(image, out) -> float:
        cmd = [sys.executable, "-m", "blendseg.cli", "predict", str(checkpoint), str(image), "--out", str(out),
               "--conf", "0.05", "--slice", "512", "--save-json", "--no-draw"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        assert status == 0
        return usage.ru_maxrss / 1024

    base, big = peak(tmp_path / "vga.jpg", tmp_path / "a"), peak(tmp_path / "big.jpg", tmp_path / "b")
    assert big - base < 6 * 72, f"24 MP sliced: {big:.0f} MB peak, VGA: {base:.0f} MB"  # 72 MB = one photo


def test_val_with_slice_scores_the_merged_tiles(checkpoint, synth_data):
    """``Model.val(slice=...)``: every val image through the sliced predictor into the same COCO evaluator."""
    import blendseg

    model = blendseg.load(checkpoint, device="cpu")
    metrics = model.val(synth_data, slice=SliceSpec(128, 0.25, batch=2))
    assert {"bbox", "segm"} <= set(metrics) and 0 <= metrics["segm"]["AP"] <= 100


@pytest.mark.slow
def test_training_on_tiles_cuts_large_images_and_evaluates_sliced(tmp_path, capsys):
    """``data.tile``: the loader's images are tiles of the large training images (at full size: no reduced
    decode), and the evaluation during training is sliced at the tile size."""
    import blendseg
    from blendseg.data.loader import build_loader
    from blendseg.data.synth import synthesize
    from blendseg.engine.runner import build_dataset
    from blendseg.zoo import get_preset

    data = synthesize(tmp_path / "big", train=4, val=2, seed=5, min_size=400, max_size=400, object_scale=128)
    cfg = get_preset("blendmask_tiny_test")
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, tile=160, min_size_train=(160,)))
    ds = build_dataset(cfg, str(data), "train", train=True)
    assert ds.decode_min_side == 0
    images, targets = next(iter(build_loader(ds, 2, True, num_workers=0)))
    assert all(max(s) <= 160 for s in images.image_sizes) and all(len(t["boxes"]) for t in targets)
    overrides = {"solver.max_iter": 2, "data.num_workers": 0, "data.tile": 160, "data.min_size_train": [160]}
    metrics = blendseg.train("blendmask_tiny_test", data, tmp_path / "run", overrides=overrides)
    assert "(sliced)" in capsys.readouterr().out and "segm" in metrics
