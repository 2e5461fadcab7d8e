"""Tracking of decoded boxes across ticks: a constant-velocity Kalman filter per track fuses each box's
centre, observed tick after tick, with the velocity the model predicts; a track's scores are averaged.

The velocity head sees about a second of history through the time queue and regresses toward a typical
speed; a box's track sees its centre move. Fusing the two (in the global frame, so the ego's own motion,
known from its pose, drops out) lowers the devkit's velocity error on held-out scenes (README). What a
box leaves with:
- velocity: the filter's;
- centre: the filter's for a track slower than `still_track_speed_mps` (a parked car's depth, seen from
  many ego positions, averages out); a moving track keeps the decoded centre, because the filtered one
  lags it (smoothing every centre lowered car AP at 1 m);
- score: a mix of its own and the track's running average (time constant `score_memory_s`): a box seen
  tick after tick outranks one that flickers.
Association is greedy by score to the nearest predicted track of the same class within a gate, as
CenterPoint's tracker; a track unmatched for longer than `max_age_s` ends. The two noise levels, the still
track speed and the score average's memory and weight are fitted per weights file on training scenes
(`bevstream calibrate`, lab.calibration.tracking) and stored in it; the tracker runs after the NMS and before
the still speeds and attributes are applied.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.distance import cdist
from torch import Tensor

CENTRE, VELOCITY = slice(0, 2), slice(7, 9)  # x, y and vx, vy of a (..., 9) box (perception.boxes)


@dataclass(frozen=True)
class TrackingConfig:
    """The filter's noise model (one standard deviation each) and the association's limits."""

    enabled: bool = True
    position_noise_m: float = 0.6  # of a decoded centre
    velocity_noise_mps: float = 1.0  # of a predicted velocity
    acceleration_mps2: float = 1.0  # white-noise acceleration of the tracked objects
    gate_m: float = 2.0  # a box joins a track whose predicted centre lies within this distance
    max_age_s: float = 0.5  # a track unmatched for longer ends
    still_track_speed_mps: float = 1.0  # a slower track reports its filtered centre (0: never)
    score_memory_s: float = 0.5  # time constant of a track's running score average (0: no average)
    score_track_weight: float = 0.5  # a box's score = (1 - w) its own + w its track's average

    def __post_init__(self) -> None:
        for name in ("position_noise_m", "velocity_noise_mps", "acceleration_mps2", "gate_m", "max_age_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"TrackingConfig.{name} must be a finite number > 0, got {v}")
        for name in ("still_track_speed_mps", "score_memory_s"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"TrackingConfig.{name} must be a finite number >= 0, got {v}")
        if not 0 <= self.score_track_weight <= 1:
            raise ValueError(f"TrackingConfig.score_track_weight must lie in [0, 1], got {self.score_track_weight}")


def constant_velocity_transition(dt: float, acceleration: float) -> tuple[np.ndarray, np.ndarray]:
    """State transition F (2, 2) and process noise Q (2, 2) of one axis's (position, velocity) over dt seconds
    under white-noise acceleration of spectral density acceleration**2."""
    f = np.array([[1.0, dt], [0.0, 1.0]])
    q = acceleration ** 2 * np.array([[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]])
    return f, q


def greedy_match(centres: np.ndarray, labels: np.ndarray, scores: np.ndarray, track_centres: np.ndarray,
                 track_labels: np.ndarray, gate: float) -> np.ndarray:
    """(N, 2) box centres, (N,) labels and scores; (M, 2) predicted track centres, (M,) labels -> (N,) the
    track each box joins (-1: none). Best score first, each box takes the nearest free track of its class
    closer than `gate`."""
    match = np.full(len(centres), -1, np.int64)
    if not len(centres) or not len(track_centres):
        return match
    dist = cdist(centres, track_centres)  # (N, M)
    box, track = np.nonzero((dist < gate) & (labels[:, None] == track_labels[None]))  # the candidate pairs
    rank = np.argsort(np.argsort(-scores, kind="stable"), kind="stable")  # (N,) 0 = best score
    taken = np.zeros(len(track_centres), bool)
    for k in np.lexsort((track, dist[box, track], rank[box])):  # by box rank, then distance, then track index
        i, j = box[k], track[k]
        if match[i] < 0 and not taken[j]:
            match[i], taken[j] = j, True
    return match


class BoxTracker:
    """The tracks of one stream. `update` each tick in time order (a tick not after the last one starts
    afresh); `reset` at a new scene.

    x and y move independently under the same noise, so one (2, 2) covariance of (position, velocity)
    serves both axes of a track: the same filter as the (4, 4) one over (x, y, vx, vy), without its inverse.
    """

    def __init__(self, config: TrackingConfig = TrackingConfig()):
        self.config = config
        c = config
        self._noise = np.diag([c.position_noise_m ** 2, c.velocity_noise_mps ** 2])  # R (2, 2), per axis
        self.reset()

    def reset(self) -> None:
        self.state = np.zeros((0, 2, 2))  # (M, (position, velocity), (x, y)), global frame
        self.covariance = np.zeros((0, 2, 2))  # (M, 2, 2) of (position, velocity), either axis
        self.labels = np.zeros(0, np.int64)  # (M,)
        self.ids = np.zeros(0, np.int64)  # (M,)
        self.last_seen_s = np.zeros(0)  # (M,)
        self.mean_score = np.zeros(0)  # (M,) running average of the track's scores
        self.time_s: float | None = None
        self._next_id = 0

    def __len__(self) -> int:
        return len(self.state)

    def snapshot(self) -> dict:
        """A copy of the tracks (plain arrays and numbers), for a checkpoint taken while ticks go on."""
        return {"state": self.state.copy(), "covariance": self.covariance.copy(), "labels": self.labels.copy(),
                "ids": self.ids.copy(), "last_seen_s": self.last_seen_s.copy(), "mean_score": self.mean_score.copy(),
                "time_s": self.time_s, "next_id": self._next_id}

    def restore(self, snapshot: dict) -> None:
        """The tracks of a snapshot(), continued from where it was taken."""
        for key in ("state", "covariance", "labels", "ids", "last_seen_s", "mean_score"):
            setattr(self, key, np.array(snapshot[key]))
        self.time_s, self._next_id = snapshot["time_s"], int(snapshot["next_id"])

    def update(self, boxes: Tensor, scores: Tensor, labels: Tensor, ego_to_global: np.ndarray,
               timestamp_s: float) -> tuple[Tensor, Tensor, np.ndarray]:
        """(K, 9) ego-frame boxes, (K,) scores and labels of one tick, (4, 4) ego->global, its time ->
        (the boxes with the tracks' velocities and still centres (a copy), (K,) their scores, (K,) track ids)."""
        if self.time_s is not None and not timestamp_s > self.time_s:
            self.reset()  # time stood still or went back (a replay restarted with no new scene): start afresh
        rot, shift = np.asarray(ego_to_global, np.float64)[:2, :2], np.asarray(ego_to_global, np.float64)[:2, 3]
        b = boxes.detach().cpu().double().numpy()
        centres = b[:, CENTRE] @ rot.T + shift  # (K, 2) global
        velocities = b[:, VELOCITY] @ rot.T  # (K, 2) global
        labels_np = labels.detach().cpu().numpy().astype(np.int64)
        scores_np = scores.detach().cpu().double().numpy()
        self._predict(timestamp_s)
        match = greedy_match(centres, labels_np, scores_np, self.state[:, 0], self.labels, self.config.gate_m)
        measured = np.stack([centres, velocities], axis=1)  # (K, 2, 2) like the state
        hit = np.nonzero(match >= 0)[0]
        tracks = match[hit]
        self._average_scores(tracks, scores_np[hit], timestamp_s)  # before _correct moves last_seen_s
        self._correct(tracks, measured[hit], timestamp_s)
        velocities[hit] = self.state[tracks, 1]  # matched boxes take their track's; a new track's box keeps its own
        still = hit[np.linalg.norm(velocities[hit], axis=-1) < self.config.still_track_speed_mps]  # (s,) boxes
        still_centres = self.state[match[still], 0]  # (s, 2) global, read before births and ends reindex
        w = self.config.score_track_weight
        out_scores = scores_np.copy()
        out_scores[hit] = (1 - w) * scores_np[hit] + w * self.mean_score[tracks]
        ids = np.empty(len(b), np.int64)
        ids[hit] = self.ids[tracks]
        born = np.nonzero(match < 0)[0]
        ids[born] = self._birth(measured[born], labels_np[born], scores_np[born], timestamp_s)
        self._forget(timestamp_s)
        out = boxes.clone()  # global -> ego: R^T (x - t), row-wise (x - t) R
        out[still, CENTRE] = torch.as_tensor((still_centres - shift) @ rot, dtype=boxes.dtype)
        out[:, VELOCITY] = torch.as_tensor(velocities @ rot, dtype=boxes.dtype)
        return out, torch.as_tensor(out_scores, dtype=scores.dtype), ids

    def track_filter(self, ego_to_global: np.ndarray, timestamp_s: float, new_scene: bool = False) -> "TickFilter":
        """update() bound to one tick, as DetectionHead.decode takes it: (boxes, scores, labels) -> (boxes,
        scores); the tracks are reset first when the tick starts a new scene (or a fresh temporal state)."""
        if new_scene:
            self.reset()
        return TickFilter(self, ego_to_global, timestamp_s)

    def _predict(self, timestamp_s: float) -> None:
        if self.time_s is not None and len(self):
            f, q = constant_velocity_transition(timestamp_s - self.time_s, self.config.acceleration_mps2)
            self.state = f @ self.state  # (M, 2, 2): both axes' columns at once
            self.covariance = f @ self.covariance @ f.T + q
        self.time_s = timestamp_s

    def _average_scores(self, tracks: np.ndarray, scores: np.ndarray, timestamp_s: float) -> None:
        """Each (n,) track's running score average takes its box's score, weighted by the time since the track
        was last seen: a dropped tick counts as the time it spans."""
        keep = np.exp(-(timestamp_s - self.last_seen_s[tracks]) / self.config.score_memory_s) \
            if self.config.score_memory_s > 0 else 0.0
        self.mean_score[tracks] = keep * self.mean_score[tracks] + (1 - keep) * scores

    def _correct(self, tracks: np.ndarray, measured: np.ndarray, timestamp_s: float) -> None:
        """Kalman update of the (n,) tracks with their (n, 2, 2) measurements (position and velocity observed
        directly)."""
        if not len(tracks):
            return
        p = self.covariance[tracks]  # (n, 2, 2)
        s = p + self._noise  # innovation covariance (n, 2, 2)
        s_inv = np.stack([s[:, 1, 1], -s[:, 0, 1], -s[:, 1, 0], s[:, 0, 0]], axis=-1).reshape(-1, 2, 2)
        gain = p @ (s_inv / (s[:, 0, 0] * s[:, 1, 1] - s[:, 0, 1] * s[:, 1, 0])[:, None, None])  # (n, 2, 2)
        self.state[tracks] += gain @ (measured - self.state[tracks])
        self.covariance[tracks] = (np.eye(2) - gain) @ p
        self.last_seen_s[tracks] = timestamp_s

    def _birth(self, measured: np.ndarray, labels: np.ndarray, scores: np.ndarray, timestamp_s: float) -> np.ndarray:
        """New tracks at (n, 2, 2) measurements, with the measurement noise as their covariance -> their ids."""
        n = len(measured)
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        self.state = np.concatenate([self.state, measured])
        self.covariance = np.concatenate([self.covariance, np.broadcast_to(self._noise, (n, 2, 2))])
        self.labels = np.concatenate([self.labels, labels])
        self.ids = np.concatenate([self.ids, ids])
        self.last_seen_s = np.concatenate([self.last_seen_s, np.full(n, timestamp_s)])
        self.mean_score = np.concatenate([self.mean_score, scores])
        return ids

    def _forget(self, timestamp_s: float) -> None:
        alive = timestamp_s - self.last_seen_s <= self.config.max_age_s
        self.state, self.covariance = self.state[alive], self.covariance[alive]
        self.labels, self.ids, self.last_seen_s = self.labels[alive], self.ids[alive], self.last_seen_s[alive]
        self.mean_score = self.mean_score[alive]


class TickFilter:
    """BoxTracker.update bound to one tick: called with (boxes, scores, labels) -> (boxes, scores), it keeps
    the track ids it assigned, (K,) in the boxes' order, as `track_ids` (None until called)."""

    def __init__(self, tracker: BoxTracker, ego_to_global: np.ndarray, timestamp_s: float):
        self.tracker, self.ego_to_global, self.timestamp_s = tracker, ego_to_global, timestamp_s
        self.track_ids: np.ndarray | None = None

    def __call__(self, boxes: Tensor, scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        out, out_scores, self.track_ids = self.tracker.update(boxes, scores, labels, self.ego_to_global,
                                                              self.timestamp_s)
        return out, out_scores
