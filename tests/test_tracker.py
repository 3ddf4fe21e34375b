"""The tracker (issue 38's first part): ids that survive the synthetic video's occlusions, entries and exits from
its ground truth, a missed frame, a low-score frame; weak detections do not start tracks; classes never mix."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from blendseg.data.mots import read_mots
from blendseg.data.synth_video import synthesize_video
from blendseg.inference.tracker import ByteTracker, shifted

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


def test_shifted_masks():
    m = np.zeros((5, 6), bool)
    m[1, 1] = True
    assert shifted(m, 2, 3)[3, 4] and shifted(m, -1, -1)[0, 0] and not shifted(m, 9, 0).any()


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
