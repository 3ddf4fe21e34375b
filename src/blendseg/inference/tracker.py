"""Tracking by detection: ByteTrack's association (Zhang et al. 2022) on boxes *and masks*, with a constant-velocity
Kalman filter as its motion model.

Per frame: the tracks' boxes are predicted; detections scoring at least ``high`` are matched to every track (tracked
or lost) by IoU, then those between ``low`` and ``high`` to the tracks still unmatched that were seen last frame
(ByteTrack's second stage: weak detections keep tracks alive through occlusion and blur); a high detection left over
and scoring at least ``new`` starts a track; a track unseen for ``buffer`` frames ends. The IoU counts only between
the same class: the mean of the box IoU and the mask IoU where both have masks (the track's last mask moved by the
predicted displacement), the box IoU alone otherwise. Masks separate objects whose boxes overlap; boxes keep thin
shapes matched when a few pixels of camera shake halve their mask IoU. Every detection keeps its mask; those no
track takes get id -1.

Why our own: the maintained ByteTrack implementations (Roboflow's ``trackers``, ``boxmot``, ultralytics') associate
by boxes only, and supervision no longer ships one. The assignment is scipy's (``linear_sum_assignment``).

Shape legend: N detections, T tracks, H x W frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import MissingExtra


class KalmanBox:
    """Constant-velocity Kalman filter on (cx, cy, aspect w/h, h) and their velocities, noise scaled by the box
    height (ByteTrack's / DeepSORT's weights: 1/20 position, 1/160 velocity)."""

    POS, VEL = 1 / 20, 1 / 160

    def __init__(self, box: np.ndarray) -> None:
        z = _xyah(box)
        self.x = np.r_[z, np.zeros(4)]
        h = z[3]
        std = [
            2 * self.POS * h,
            2 * self.POS * h,
            1e-2,
            2 * self.POS * h,
            10 * self.VEL * h,
            10 * self.VEL * h,
            1e-5,
            10 * self.VEL * h,
        ]
        self.P = np.diag(np.square(std))
        self.F = np.eye(8)
        self.F[:4, 4:] = np.eye(4)
        self.H = np.eye(4, 8)

    def predict(self) -> None:
        h = self.x[3]
        q = [self.POS * h, self.POS * h, 1e-2, self.POS * h, self.VEL * h, self.VEL * h, 1e-5, self.VEL * h]
        self.x = self.F @ self.x
        self.P = self.F @ self.P @ self.F.T + np.diag(np.square(q))

    def update(self, box: np.ndarray) -> None:
        h = self.x[3]
        R = np.diag(np.square([self.POS * h, self.POS * h, 1e-1, self.POS * h]))
        S = self.H @ self.P @ self.H.T + R
        K = self.P @ self.H.T @ np.linalg.inv(S)
        self.x = self.x + K @ (_xyah(box) - self.H @ self.x)
        self.P = (np.eye(8) - K @ self.H) @ self.P

    def box(self) -> np.ndarray:
        cx, cy, a, h = self.x[:4]
        w = a * h
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def _xyah(box: np.ndarray) -> np.ndarray:
    w, h = max(box[2] - box[0], 1e-3), max(box[3] - box[1], 1e-3)
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, w / h, h])


@dataclass
class Track:
    """A tracked object: its id, class, Kalman filter, last box and mask, and the frame it was last seen in."""

    id: int
    label: int
    kf: KalmanBox
    box: np.ndarray
    mask: Window | None
    seen: int
    history: list[int] = field(default_factory=list)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


Window = tuple[int, int, np.ndarray]  # (y0, x0, (h, w) bool): a mask's pixels inside the box at (y0, x0)


def windows(masks) -> list[Window]:
    """Each instance's mask as a :data:`Window`: from a model's compact masks (anything with ``window(i)``, e.g.
    :class:`~blendseg.structures.LazyMasks`, never pasted at full size) or from (N, H, W) bool masks (cut to their
    bounding boxes). Memory and the IoUs then follow the objects' sizes, not the frame's."""
    if hasattr(masks, "window"):
        out = []
        for i in range(len(masks)):
            y0, x0, win = masks.window(i)
            out.append((int(y0), int(x0), win.cpu().numpy().astype(bool, copy=False)))
        return out
    out = []
    for m in np.asarray(masks, dtype=bool):
        ys, xs = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        out.append(
            (int(ys[0]), int(xs[0]), m[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]) if len(ys) else (0, 0, m[:0, :0])
        )
    return out


class _OnDemand:
    """A model's compact masks as :data:`Window` s made when first asked for: only detections whose box meets a
    track's, and those a track keeps, are pasted (most weak detections never are)."""

    def __init__(self, masks) -> None:
        self.masks, self.made = masks, {}

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, i: int) -> Window:
        if i not in self.made:
            y0, x0, win = self.masks.window(int(i))
            self.made[i] = (int(y0), int(x0), win.cpu().numpy().astype(bool, copy=False))
        return self.made[i]


def window_iou(a: Window, b: Window, dy: int = 0, dx: int = 0) -> float:
    """IoU of two windowed masks, ``a`` moved by (dy, dx) pixels."""
    (ay, ax, am), (by, bx, bm) = a, b
    ay, ax = ay + dy, ax + dx
    y0, x0 = max(ay, by), max(ax, bx)
    y1, x1 = min(ay + am.shape[0], by + bm.shape[0]), min(ax + am.shape[1], bx + bm.shape[1])
    inter = 0
    if y1 > y0 and x1 > x0:
        inter = int(
            np.logical_and(am[y0 - ay : y1 - ay, x0 - ax : x1 - ax], bm[y0 - by : y1 - by, x0 - bx : x1 - bx]).sum()
        )
    union = int(am.sum()) + int(bm.sum()) - inter
    return inter / union if union else 0.0


class ByteTracker:
    """``update(boxes, scores, labels, masks=None) -> ids``: one frame's detections (xyxy (N, 4), (N,), (N,), and
    optionally their masks: (N, H, W) bool, a model's compact masks or a list of :data:`Window`) in, each one's
    track id out (-1: not tracked). ``high`` / ``low``: the two
    stages' score thresholds; ``new``: the score that starts a track; ``match`` / ``match_low``: the IoU each stage
    needs; ``buffer``: frames a lost track waits. ``use_masks=False``: boxes only, as the common trackers."""

    def __init__(
        self,
        high: float = 0.5,
        low: float = 0.1,
        new: float = 0.6,
        match: float = 0.2,
        match_low: float = 0.5,
        buffer: int = 30,
        use_masks: bool = True,
    ) -> None:
        self.high, self.low, self.new, self.match, self.match_low = high, low, new, match, match_low
        self.buffer, self.use_masks = buffer, use_masks
        self.tracks: list[Track] = []
        self.frame, self.next_id = 0, 1

    def update(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, masks=None) -> np.ndarray:
        self.frame += 1
        boxes, scores, labels = np.asarray(boxes, float).reshape(-1, 4), np.asarray(scores), np.asarray(labels)
        masks = masks if (masks is not None and self.use_masks and len(masks) == len(boxes)) else None
        if masks is not None and not isinstance(masks, list):
            masks = _OnDemand(masks) if hasattr(masks, "window") else windows(masks)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        for t in self.tracks:
            t.kf.predict()
        high = np.flatnonzero(scores >= self.high)
        low = np.flatnonzero((scores >= self.low) & (scores < self.high))
        pool = list(range(len(self.tracks)))
        pairs, pool, left = self._match(pool, high, boxes, labels, masks, self.match)
        recent = [k for k in pool if self.tracks[k].seen == self.frame - 1]  # seen last frame: not lost
        pairs2, _, _ = self._match(recent, low, boxes, labels, masks, self.match_low)
        for k, d in pairs + pairs2:
            t = self.tracks[k]
            t.kf.update(boxes[d])
            t.box, t.seen = boxes[d], self.frame
            t.mask = masks[d] if masks is not None else None
            t.history.append(self.frame)
            ids[d] = t.id
        for d in left:
            if scores[d] >= self.new:
                mask = masks[d] if masks is not None else None
                self.tracks.append(
                    Track(self.next_id, int(labels[d]), KalmanBox(boxes[d]), boxes[d], mask, self.frame, [self.frame])
                )
                ids[d] = self.next_id
                self.next_id += 1
        self.tracks = [t for t in self.tracks if self.frame - t.seen <= self.buffer]
        return ids

    def _match(self, tracks: list[int], dets: np.ndarray, boxes, labels, masks, threshold: float):
        """(matched (track, detection) pairs, tracks left, detections left) by the highest total IoU, each pair
        needing ``threshold``."""
        if not len(tracks) or not len(dets):
            return [], list(tracks), list(dets)
        iou = self._iou([self.tracks[k] for k in tracks], dets, boxes, labels, masks)
        try:
            from scipy.optimize import linear_sum_assignment
        except ImportError:
            raise MissingExtra("tracking needs scipy: pip install 'blendseg[track]'") from None
        rows, cols = linear_sum_assignment(-iou)
        pairs = [(tracks[r], int(dets[c])) for r, c in zip(rows, cols) if iou[r, c] >= threshold]
        taken_t, taken_d = {p[0] for p in pairs}, {p[1] for p in pairs}
        return pairs, [k for k in tracks if k not in taken_t], [int(d) for d in dets if int(d) not in taken_d]

    def _iou(self, tracks: list[Track], dets: np.ndarray, boxes, labels, masks) -> np.ndarray:
        predicted = np.stack([t.kf.box() for t in tracks])
        iou = box_iou(predicted, boxes[dets])
        if masks is not None:
            for i, t in enumerate(tracks):
                if t.mask is None:
                    continue
                (dx, dy) = np.round(((predicted[i, :2] + predicted[i, 2:]) - (t.box[:2] + t.box[2:])) / 2).astype(int)
                for j, d in enumerate(dets):
                    if iou[i, j] > 0:  # where the boxes meet, the mean of the box and the mask IoU
                        iou[i, j] = (iou[i, j] + window_iou(t.mask, masks[d], int(dy), int(dx))) / 2
        same = np.array([t.label for t in tracks])[:, None] == labels[dets][None, :]
        return np.where(same, iou, 0.0)
