"""Ego kinematics (velocity, acceleration, yaw rate in the ego frame) derived from timestamped poses.

Sources only have ego poses (nuScenes' `ego_pose` table, or the poses a live rig reports), while the
video module wants the ego motion of every frame. Derivatives come from the quadratic through three
neighbouring samples (Lagrange form), which is a second-order central difference for interior
samples on an uneven time grid and a one-sided difference at the first/last sample:

    x'(t)  = sum_j x_j * ((t - t_k) + (t - t_m)) / ((t_j - t_k)(t_j - t_m))
    x''    = sum_j x_j * 2 / ((t_j - t_k)(t_j - t_m))

Velocity and acceleration are computed in the global frame and rotated into the ego frame of the
sample (x forward, y left, z up), so a car on a circle at constant speed v and radius r has
velocity (v, 0, 0), acceleration (0, v^2/r, 0) (centripetal, towards the centre) and yaw rate v/r.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from schema.messages import EgoKinematics, Pose


class NonFinitePoseError(ValueError):
    """A pose (or its timestamp) holds NaN or inf: the sample cannot be used."""

    def __init__(self, index: int, timestamp_us: int | float | None, what: str = "pose"):
        self.index = index
        self.timestamp_us = timestamp_us
        super().__init__(f"non-finite {what} at sample {index} (timestamp_us={timestamp_us})")


def _check(timestamps_us: Sequence[int], poses: Sequence[Pose]) -> np.ndarray:
    """Validate the inputs; return the timestamps as float64 seconds."""
    if len(timestamps_us) != len(poses):
        raise ValueError(f"{len(timestamps_us)} timestamps but {len(poses)} poses")
    t = np.asarray(timestamps_us, dtype=np.float64)
    for i, (ts, pose) in enumerate(zip(t, poses)):
        if not np.isfinite(ts):
            raise NonFinitePoseError(i, ts, "timestamp")
        if not pose.is_finite():
            raise NonFinitePoseError(i, int(ts))
    if len(t) > 1 and np.any(np.diff(t) <= 0):
        i = int(np.argmax(np.diff(t) <= 0))
        raise ValueError(f"timestamps must be strictly increasing: sample {i + 1} ({int(t[i + 1])}) "
                         f"follows {int(t[i])}")
    # Relative to the first sample, in exact integer microseconds, before scaling: absolute epoch
    # times (~1.5e15 us) in float seconds would lose the sub-microsecond precision the stencil needs.
    rel = np.asarray([int(x) - int(timestamps_us[0]) for x in timestamps_us], dtype=np.float64) if len(t) else t
    return rel * 1e-6


def _stencil(n: int, i: int) -> tuple[int, int, int]:
    """The three sample indices used at sample i: centred inside, one-sided at the ends."""
    lo = min(max(i - 1, 0), n - 3)
    return lo, lo + 1, lo + 2


def _weights(t: np.ndarray, idx: tuple[int, int, int], at: float) -> tuple[np.ndarray, np.ndarray]:
    """Lagrange weights (3,) of the first derivative at time `at` and of the second derivative."""
    d1 = np.empty(3)
    d2 = np.empty(3)
    for a, j in enumerate(idx):
        k, m = [idx[b] for b in range(3) if b != a]
        denom = (t[j] - t[k]) * (t[j] - t[m])
        d1[a] = ((at - t[k]) + (at - t[m])) / denom
        d2[a] = 2.0 / denom
    return d1, d2


def derive_kinematics(timestamps_us: Sequence[int], poses: Sequence[Pose]) -> list[EgoKinematics]:
    """Kinematics at every sample of a pose track (ego -> global poses, strictly increasing times).

    One sample gives zero motion; two give a constant velocity (zero acceleration). Raises
    NonFinitePoseError for a NaN/inf pose or timestamp and ValueError for non-increasing times.
    """
    t = _check(timestamps_us, poses)
    n = len(t)
    if n == 0:
        return []
    if n == 1:
        return [EgoKinematics.zero()]
    xyz = np.stack([p.translation for p in poses])  # (N, 3) global positions
    yaw = np.unwrap(np.array([p.yaw for p in poses]))  # (N,) continuous heading
    out = []
    for i in range(n):
        if n == 2:
            vel_g = (xyz[1] - xyz[0]) / (t[1] - t[0])
            acc_g = np.zeros(3)
            yaw_rate = (yaw[1] - yaw[0]) / (t[1] - t[0])
        else:
            idx = _stencil(n, i)
            d1, d2 = _weights(t, idx, t[i])
            pts = xyz[list(idx)]  # (3, 3)
            vel_g = d1 @ pts
            acc_g = d2 @ pts
            yaw_rate = float(d1 @ yaw[list(idx)])
        to_ego = poses[i].rotation.inverse
        out.append(EgoKinematics(to_ego.rotate(vel_g), to_ego.rotate(acc_g), float(yaw_rate)))
    return out


def kinematics_at_last(timestamps_us: Sequence[int], poses: Sequence[Pose]) -> EgoKinematics:
    """Causal kinematics at the newest sample of a short history (what a live stream can know)."""
    if not poses:
        raise ValueError("kinematics_at_last needs at least one pose")
    k = max(len(poses) - 3, 0)
    return derive_kinematics(timestamps_us[k:], poses[k:])[-1]


def kinematics_in_track(
    track_ts_us: Sequence[int], track_poses: Sequence[Pose], index: int, half_window_us: int = 50_000
) -> EgoKinematics:
    """Kinematics at sample `index` of a dense pose track (e.g. every ego pose of a nuScenes scene).

    The neighbours are the samples nearest to t -/+ half_window_us (one-sided at the ends), so the
    stencil spacing stays near half_window_us however dense or uneven the track is; dense tracks with
    millisecond steps would otherwise turn pose noise into velocity noise.
    """
    n = len(track_ts_us)
    if not 0 <= index < n:
        raise IndexError(f"index {index} outside a track of {n} samples")
    t = np.asarray(track_ts_us, dtype=np.int64)
    t0 = t[index]
    before = int(np.argmin(np.abs(t[:index] - (t0 - half_window_us)))) if index > 0 else None
    after = index + 1 + int(np.argmin(np.abs(t[index + 1:] - (t0 + half_window_us)))) if index < n - 1 else None
    if before is not None and after is not None:
        idx = [before, index, after]
        at = 1
    elif after is not None:  # first sample: two later ones
        later = index + 1 + int(np.argmin(np.abs(t[index + 1:] - (t0 + 2 * half_window_us))))
        idx = [index, after] if later == after else [index, after, later]
        at = 0
    elif before is not None:  # last sample: two earlier ones
        earlier = int(np.argmin(np.abs(t[:index] - (t0 - 2 * half_window_us))))
        idx = [before, index] if earlier == before else [earlier, before, index]
        at = len(idx) - 1
    else:
        idx, at = [index], 0
    return derive_kinematics([int(t[i]) for i in idx], [track_poses[i] for i in idx])[at]
