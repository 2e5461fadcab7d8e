"""nuScenes attributes from predicted speed, with per-group speed thresholds fitted on training data.

The model predicts no attribute; like CenterPoint, the submission names a box 'moving' above a speed
and 'parked' / 'standing' / 'without rider' at or below it. CenterPoint's 0.2 m/s suits lidar
velocities; a camera model's velocity noise (about 1 m/s for cars here) pushes most parked cars above
it, and mAAE counted them wrong. So the threshold of each group is a property of the weights:
`fit_moving_speed` picks the one that names the most matched training boxes right, and
`bevstream calibrate` stores it in the weights file's model config (`model.attributes`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# group -> (its detection classes, attribute above the threshold, attribute at or below it)
ATTRIBUTE_GROUPS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "vehicle": (("car", "truck", "bus", "trailer", "construction_vehicle"), "vehicle.moving", "vehicle.parked"),
    "pedestrian": (("pedestrian",), "pedestrian.moving", "pedestrian.standing"),
    "cycle": (("bicycle", "motorcycle"), "cycle.with_rider", "cycle.without_rider"),
}
GROUP_OF_CLASS: dict[str, str] = {name: group for group, (names, _, _) in ATTRIBUTE_GROUPS.items() for name in names}


@dataclass(frozen=True)
class AttributeConfig:
    """Speed (m/s) above which a box of each group is named moving. Defaults: CenterPoint's 0.2 m/s."""

    vehicle_moving_mps: float = 0.2
    pedestrian_moving_mps: float = 0.2
    cycle_moving_mps: float = 0.2

    def __post_init__(self) -> None:
        for group in ATTRIBUTE_GROUPS:
            v = self.threshold(group)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"AttributeConfig.{group}_moving_mps must be a finite speed >= 0, got {v}")

    def threshold(self, group: str) -> float:
        return getattr(self, f"{group}_moving_mps")


def attribute_name(name: str, speed: float, config: AttributeConfig = AttributeConfig()) -> str:
    """The submission attribute of a box of class `name` moving at `speed` m/s ('' for classes without)."""
    group = GROUP_OF_CLASS.get(name)
    if group is None:
        return ""
    _, moving, still = ATTRIBUTE_GROUPS[group]
    return moving if speed > config.threshold(group) else still


def attribute_names(names, velocities: np.ndarray, config: AttributeConfig = AttributeConfig()) -> tuple[str, ...]:
    """attribute_name of every box: names (N,), velocities (N, 2) m/s."""
    speeds = np.hypot(*np.asarray(velocities, dtype=np.float64).reshape(-1, 2).T)  # (N,)
    return tuple(attribute_name(n, float(s), config) for n, s in zip(names, speeds))


@dataclass(frozen=True)
class ThresholdFit:
    """The fitted threshold of one group and the share of matched boxes it names right (vs the old one)."""

    group: str
    boxes: int  # matched boxes of the group
    threshold: float
    accuracy: float
    previous_threshold: float
    previous_accuracy: float


def accuracy_at(speeds: np.ndarray, gt_attributes, group: str, threshold: float) -> float:
    """Share of boxes whose attribute_name at `threshold` equals the ground truth's attribute."""
    _, moving, still = ATTRIBUTE_GROUPS[group]
    speeds = np.asarray(speeds, dtype=np.float64)
    named = np.where(speeds > threshold, moving, still)
    return float(np.mean(named == np.asarray(gt_attributes, dtype=object))) if len(speeds) else float("nan")


def fit_moving_speed(speeds: np.ndarray, gt_attributes, group: str, previous: float = 0.2) -> ThresholdFit:
    """The threshold that names the most boxes right (the lowest of equals), given each matched box's
    predicted speed and its ground-truth attribute. Ground truth of neither kind (vehicle.stopped,
    pedestrian.sitting_lying_down) is wrong at any threshold and only lowers every accuracy alike.

    Candidates are 0, the midpoints between consecutive distinct speeds and the top speed (all named
    still); the count right at each is
    one cumulative sum over the speeds in order, so the fit is O(N log N).
    """
    _, moving, still = ATTRIBUTE_GROUPS[group]
    speeds = np.asarray(speeds, dtype=np.float64).reshape(-1)
    gt = np.asarray(gt_attributes, dtype=object).reshape(-1)
    if len(speeds) != len(gt):
        raise ValueError(f"fit_moving_speed: {len(speeds)} speeds for {len(gt)} ground-truth attributes")
    if not len(speeds):
        raise ValueError(f"fit_moving_speed: no matched box of group {group!r} to fit on")
    order = np.argsort(speeds, kind="stable")
    s, is_moving, is_still = speeds[order], gt[order] == moving, gt[order] == still
    distinct = np.flatnonzero(np.diff(s) > 0)  # last index of each run of equal speeds but the final one
    candidates = np.concatenate([[0.0], (s[distinct] + s[distinct + 1]) / 2, [s[-1]]])
    # threshold t: boxes with speed <= t are named still. At or below the 0-th candidate lie the boxes at
    # exactly 0, below the k-th midpoint the first distinct[k-1] + 1 boxes, below the top speed all.
    below = np.concatenate([[int(np.sum(s <= 0.0))], distinct + 1, [len(s)]])
    still_right = np.concatenate([[0], np.cumsum(is_still)])[below]
    moving_right = int(is_moving.sum()) - np.concatenate([[0], np.cumsum(is_moving)])[below]
    right = still_right + moving_right
    best = int(np.argmax(right))  # the first maximum: the lowest threshold of equals
    return ThresholdFit(group, len(s), float(candidates[best]), float(right[best] / len(s)),
                        float(previous), accuracy_at(speeds, gt, group, previous))


__all__ = ["ATTRIBUTE_GROUPS", "AttributeConfig", "ThresholdFit", "accuracy_at", "attribute_name", "attribute_names",
           "fit_moving_speed"]
