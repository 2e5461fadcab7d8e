"""The per-group moving-speed thresholds of schema.attributes, fitted on the matched boxes of a training split:
the threshold that names the most boxes' attributes right (`bevstream calibrate` stores it in the weights)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schema.attributes import ATTRIBUTE_GROUPS


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
