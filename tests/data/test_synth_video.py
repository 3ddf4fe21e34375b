"""The synthetic video of issue 38's first part: moving shapes with ground-truth track ids in the MOTS format
(MOTChallenge's layout), deterministic, with the events a tracker must survive; and the MOTS files' round trip."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from PIL import Image

from blendseg.cli import main
from blendseg.data.mots import mots_object, read_mots, write_mots
from blendseg.data.synth_video import synthesize_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return synthesize_video(tmp_path_factory.mktemp("video"), frames=60, size=(96, 128), objects=8, seed=2)


def _tracks(folder) -> dict[int, dict[int, np.ndarray]]:
    tracks: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
    for o in read_mots(folder / "gt" / "gt.txt"):
        tracks[o.track_id][o.frame] = o.mask()
    return tracks


def test_frames_ground_truth_and_seqinfo_in_motchallenges_layout(video):
    frames = sorted((video / "img1").iterdir())
    assert [f.name for f in frames[:2]] == ["000001.png", "000002.png"] and len(frames) == 60
    assert Image.open(frames[0]).size == (128, 96)
    info = (video / "seqinfo.ini").read_text()
    assert "seqLength=60" in info and "imWidth=128" in info and "imHeight=96" in info and "imExt=.png" in info
    objects = read_mots(video / "gt" / "gt.txt")
    assert {o.frame for o in objects} <= set(range(1, 61))
    assert all(o.track_id // 1000 == o.class_id and o.mask().shape == (96, 128) for o in objects)


def test_the_video_holds_what_a_tracker_must_survive(video):
    tracks = _tracks(video)
    assert len(tracks) >= 6
    firsts = [min(f) for f in tracks.values()]
    lasts = [max(f) for f in tracks.values()]
    assert any(f > 1 for f in firsts), "an object enters after the first frame"
    assert any(last < 60 for last in lasts), "an object leaves before the last frame"
    # one mask per id and frame, no two ids on one pixel (the visible parts)
    by_frame: dict[int, list[np.ndarray]] = defaultdict(list)
    for frames in tracks.values():
        for f, m in frames.items():
            by_frame[f].append(m)
    assert all(np.sum(masks, axis=0).max() <= 1 for masks in by_frame.values())
    # occlusion: an object's visible area drops well below its usual one in some frame
    occluded = [min(m.sum() for m in f.values()) < 0.7 * np.median([m.sum() for m in f.values()]) for f in
                tracks.values() if len(f) > 10]  # fmt: skip
    assert any(occluded)

    # still objects: their mask moves only with the camera's jitter (a few pixels)
    def centre(m):
        return np.argwhere(m).mean(0)

    drift = {k: np.abs(centre(f[max(f)]) - centre(f[min(f)])).max() for k, f in tracks.items() if len(f) >= 10}
    assert any(d < 6 and len(tracks[k]) == 60 for k, d in drift.items()), drift  # still all along
    assert any(d > 20 for d in drift.values()), drift  # and moving ones


def test_the_same_seed_writes_the_same_video(tmp_path, video):
    again = synthesize_video(tmp_path, frames=60, size=(96, 128), objects=8, seed=2)
    assert (again / "gt" / "gt.txt").read_text() == (video / "gt" / "gt.txt").read_text()
    assert np.array_equal(np.asarray(Image.open(again / "img1" / "000030.png")),
                          np.asarray(Image.open(video / "img1" / "000030.png")))  # fmt: skip


def test_mots_round_trip_and_a_clear_error_for_a_bad_line(tmp_path):
    rng = np.random.default_rng(0)
    masks = [rng.random((20, 30)) > 0.5 for _ in range(3)]
    objs = [mots_object(2, 1001, 1, masks[0]), mots_object(1, 2002, 2, masks[1]), mots_object(1, 1001, 1, masks[2])]
    path = write_mots(tmp_path / "t.txt", objs)
    back = read_mots(path)
    assert [(o.frame, o.track_id) for o in back] == [(1, 1001), (1, 2002), (2, 1001)]
    assert np.array_equal(back[2].mask(), masks[0]) and np.array_equal(back[0].mask(), masks[2])
    (tmp_path / "bad.txt").write_text("1 1001 1 20 30\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: a MOTS line has 6 fields"):
        read_mots(tmp_path / "bad.txt")


def test_the_command_writes_a_video(tmp_path, capsys):
    assert main(["data", "synth", str(tmp_path), "--video", "--frames", "3", "--size", "64", "80"]) == 0
    assert "3 frames in img1/" in capsys.readouterr().out
    assert len(list((tmp_path / "synth-01" / "img1").iterdir())) == 3
