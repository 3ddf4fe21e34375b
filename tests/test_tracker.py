"""The tracker (issue 38's first part): ids that survive the synthetic video's occlusions, entries and exits from
its ground truth, a missed frame, a low-score frame; weak detections do not start tracks; classes never mix."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from blendseg.data.mots import read_mots
from blendseg.data.synth_video import synthesize_video
from blendseg.inference.tracker import ByteTracker, window_iou, windows

pytest.importorskip("scipy", reason="the tracker's assignment is scipy's (blendseg[track])")


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], float)


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> list[list]:
    """Per frame the ground truth as detections: (gt id, class, box, mask)."""
    folder = synthesize_video(tmp_path_factory.mktemp("trk"), frames=60, size=(192, 256), objects=8, seed=2)
    out: dict[int, list] = defaultdict(list)
    for o in read_mots(folder / "gt" / "gt.txt"):
        m = o.mask()
        out[o.frame].append((o.track_id, o.class_id, _box(m), m))
    return [out[f] for f in range(1, 61)]


def _run(tracker: ByteTracker, frames: list[list], score=lambda f, gid: 0.9, drop=lambda f, gid: False):
    """{gt id: [track id per frame it was given]}."""
    seen: dict[int, list[int]] = defaultdict(list)
    for f, dets in enumerate(frames, 1):
        dets = [d for d in dets if not drop(f, d[0])]
        if not dets:
            tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
            continue
        ids = tracker.update(np.stack([d[2] for d in dets]), np.array([score(f, d[0]) for d in dets]),
                             np.array([d[1] for d in dets]), np.stack([d[3] for d in dets]))  # fmt: skip
        for d, i in zip(dets, ids):
            seen[d[0]].append(int(i))
    return seen


@pytest.mark.parametrize("use_masks", [True, False])
def test_ground_truth_keeps_one_id_per_object_through_the_video(frames, use_masks):
    seen = _run(ByteTracker(use_masks=use_masks), frames)
    assert len(seen) >= 6
    for gid, ids in seen.items():
        assert len(set(ids)) == 1 and ids[0] > 0, (gid, ids)  # no switch, never untracked
    assert len({ids[0] for ids in seen.values()}) == len(seen)  # no two objects share an id


def test_a_missed_frame_and_a_weak_frame_keep_the_id(frames):
    gid = max({d[0] for f in frames for d in f}, key=lambda g: sum(d[0] == g for f in frames for d in f))
    seen = _run(ByteTracker(), frames, drop=lambda f, g: g == gid and f in (20, 21))  # two frames missed
    assert len(set(seen[gid])) == 1
    weak = _run(ByteTracker(), frames, score=lambda f, g: 0.3 if (g == gid and f == 30) else 0.9)
    assert len(set(weak[gid])) == 1 and -1 not in weak[gid]  # the second stage took the weak detection


def test_weak_detections_start_no_track_and_classes_never_mix():
    t = ByteTracker()
    box = np.array([[10.0, 10.0, 30.0, 30.0]])
    assert t.update(box, np.array([0.3]), np.array([0]))[0] == -1  # below `new`: no track
    first = t.update(box, np.array([0.9]), np.array([0]))[0]
    assert first > 0
    assert t.update(box, np.array([0.9]), np.array([1]))[0] not in (-1, first)  # another class: another track
    assert t.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)).shape == (0,)


def test_a_lost_track_ends_after_its_buffer():
    t = ByteTracker(buffer=2)
    box = np.array([[10.0, 10.0, 30.0, 30.0]])
    first = t.update(box, np.array([0.9]), np.array([0]))[0]
    for _ in range(3):
        t.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))
    assert t.update(box, np.array([0.9]), np.array([0]))[0] != first


def test_windowed_mask_iou_matches_the_full_frame_one():
    """Masks cut to their boxes (how the tracker keeps them) give the full-frame IoU, moved or not, and the same
    windows come from dense masks and from a model's compact ones."""
    from blendseg.structures import DenseMasks

    rng = np.random.default_rng(0)
    a, b = np.zeros((2, 40, 50), bool)
    a[5:20, 8:30] = rng.random((15, 22)) > 0.3
    b[9:31, 12:40] = rng.random((22, 28)) > 0.3
    full = lambda x, y: (x & y).sum() / (x | y).sum()  # noqa: E731
    wa, wb = windows(np.stack([a, b]))
    assert window_iou(wa, wb) == pytest.approx(full(a, b))
    moved = np.roll(np.roll(a, 4, 0), 3, 1)  # nothing crosses the border
    assert window_iou(wa, wb, 4, 3) == pytest.approx(full(moved, b))
    assert window_iou(wa, wa, 100, 0) == 0.0
    import torch

    lazy = windows(DenseMasks(torch.from_numpy(np.stack([a, b]))))
    assert all(x[:2] == y[:2] and np.array_equal(x[2], y[2]) for x, y in zip(lazy, [wa, wb]))


def test_model_track_gives_each_result_its_ids_and_a_repeated_frame_the_same_ones(checkpoint):
    """``Model.track``: a still scene (one frame four times) keeps every tracked detection's id, detections below
    the tracker's ``new`` score (set between this random model's scores) start no track, the ids travel with
    indexing and into ``to_dict``."""
    import blendseg

    model = blendseg.load(checkpoint, device="cpu")
    frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    scores = np.unique(model.predict(frame, conf=0.1, max_det=30)[0].scores.numpy())
    assert len(scores) > 3, "the test needs detections"
    cut = float(scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # between two of this model's scores
    results = model.track([frame] * 4, tracker=ByteTracker(high=0.3, new=cut), max_det=30)
    assert len(results) == 4 and all(r.track_ids is not None and len(r.track_ids) == len(r) for r in results)
    first = results[0]
    assert np.array_equal((first.track_ids >= 0).numpy(), (first.scores >= cut).numpy())  # weak ones start none
    for r in results[1:]:
        assert np.array_equal(r.track_ids.numpy(), first.track_ids.numpy())
    assert first[0:2].track_ids.tolist() == first.track_ids[:2].tolist()
    assert first.to_dict()["instances"][0]["track_id"] == int(first.track_ids[0])
    plain, drawn = first.plot(), results[1].plot()
    assert np.array_equal(drawn, first.plot())  # the same ids, the same colours, frame after frame
    untracked = first[0 : len(first)]
    untracked.track_ids = None
    assert not np.array_equal(untracked.plot(), plain)  # ids change the drawing (colours and "#id" labels)


@pytest.mark.slow
def test_track_and_val_track_from_the_command_line(trained, tmp_path, capsys):
    """``data synth --video`` two sequences; ``track`` (a model trained on the synthetic shapes) on one's frames
    writes the drawn video, MOTS tracks whose ids and classes are the JSON's tracked detections, and ``val-track``
    scores both sequences with TrackEval into metrics.json."""
    pytest.importorskip("trackeval", reason="the tracking metrics are TrackEval's (blendseg[track])")
    pytest.importorskip("cv2", reason="the drawn video is written with OpenCV")
    import json

    from blendseg.cli import main

    checkpoint = trained("blendmask_tiny_test") / "weights" / "last.pt"
    seqs = tmp_path / "seqs"
    synth = ["data", "synth", str(seqs), "--video", "--sequences", "2", "--frames", "6", "--size", "96", "128"]
    assert main(synth) == 0
    assert sorted(p.name for p in seqs.iterdir()) == ["synth-01", "synth-02"]
    out = tmp_path / "track"
    args = ["track", str(checkpoint), str(seqs / "synth-01" / "img1"), "--out", str(out), "--save-mots", "--save-json"]
    assert main([*args, "--conf", "0.05", "--low", "0.05", "--new", "0.2", "--high", "0.2"]) == 0
    assert (out / "img1_pred.mp4").stat().st_size > 0
    frames = json.loads((out / "img1.json").read_text())
    mots = read_mots(out / "mots" / "img1.txt")
    assert len(frames) == 6 and mots, "the trained model finds the shapes"
    for o in mots:  # every MOTS object is a tracked detection of that frame, its class the dataset's id
        ids = {(i["track_id"], 1 + i["label"]) for i in frames[o.frame - 1]["instances"]}
        assert (o.track_id, o.class_id) in ids
    assert main(["val-track", str(checkpoint), str(seqs), "--out", str(tmp_path / "vt")]) == 0
    metrics = json.loads((tmp_path / "vt" / "metrics.json").read_text())
    assert metrics["sequences"] == ["synth-01", "synth-02"] and {"HOTA", "IDF1", "MOTA"} <= set(metrics["all"])
    assert (tmp_path / "vt" / "synth-02.txt").is_file() and "HOTA" in capsys.readouterr().out
