"""The moving-speed threshold fit against a brute-force search."""
from __future__ import annotations

import numpy as np
import pytest

from lab.calibration.attributes import accuracy_at, fit_moving_speed
from schema.attributes import ATTRIBUTE_GROUPS


def _brute_force_best(speeds, gt, group) -> float:
    """The best accuracy over every threshold worth trying: each speed, just below and above it, and 0."""
    s = np.unique(speeds)
    tries = np.concatenate([[0.0], s, s - 1e-9, s + 1e-9])
    return max(accuracy_at(speeds, gt, group, t) for t in tries if t >= 0)


@pytest.mark.parametrize("seed", range(6))
def test_fit_finds_the_best_threshold_of_a_brute_force_search(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    _, moving, still = ATTRIBUTE_GROUPS["vehicle"]
    gt = rng.choice([moving, still, "vehicle.stopped"], size=n, p=[0.45, 0.45, 0.1])
    speeds = np.where(gt == moving, rng.gamma(3.0, 1.5, n), rng.gamma(1.0, 0.8, n))
    speeds[rng.random(n) < 0.2] = 0.0  # ties at exactly zero
    speeds = np.round(speeds, 1)  # and ties elsewhere
    fit = fit_moving_speed(speeds, list(gt), "vehicle", previous=0.2)
    assert fit.accuracy == pytest.approx(_brute_force_best(speeds, gt, "vehicle"))
    assert fit.accuracy == pytest.approx(accuracy_at(speeds, gt, "vehicle", fit.threshold))  # it names them so
    assert fit.previous_accuracy == pytest.approx(accuracy_at(speeds, gt, "vehicle", 0.2))
    assert fit.accuracy >= fit.previous_accuracy and fit.boxes == n


def test_fit_separates_separable_speeds_and_ignores_neither_kind():
    speeds = np.array([0.0, 0.4, 0.9, 3.0, 4.0, 0.5])
    gt = ["pedestrian.standing"] * 3 + ["pedestrian.moving"] * 2 + ["pedestrian.sitting_lying_down"]
    fit = fit_moving_speed(speeds, gt, "pedestrian")
    assert 0.9 < fit.threshold < 3.0 and fit.accuracy == pytest.approx(5 / 6)  # the sitting one is wrong at any threshold
    all_still = fit_moving_speed(np.array([0.5, 1.0]), ["cycle.without_rider"] * 2, "cycle")
    assert all_still.accuracy == 1.0 and all_still.threshold >= 1.0
    with pytest.raises(ValueError, match="no matched box"):
        fit_moving_speed(np.zeros(0), [], "cycle")
    with pytest.raises(ValueError, match="2 speeds for 1"):
        fit_moving_speed(np.zeros(2), ["cycle.with_rider"], "cycle")
