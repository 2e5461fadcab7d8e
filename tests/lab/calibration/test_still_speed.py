"""The still-speed fit on the real scene: parked boxes with velocity noise are zeroed by a still speed just above
the noise; movers are not zeroed."""
import math

import pytest

from schema.classes import DETECTION_NAMES
from tests.lab.test_evaluation import _gt_as_predictions

STILL = (2.0, 1.5, 0.75, 1.25, 0.25, 0.5, 1.0, 1.25, 0.0, 0.0)


@pytest.fixture(scope="module")
def nusc(real_scene_root):
    from nuscenes.nuscenes import NuScenes

    return NuScenes("v1.0-trainval", str(real_scene_root), verbose=False)


def _fit(nusc, results, tmp_path, name, candidates=(0.0, 0.25, 0.5, 1.0), moving_speed=None):
    from lab.calibration.still_speed import fit_still_speeds
    from lab.devkit import VELOCITY_CLASSES, loaded_detection_eval
    from replay.nuscenes.submission import split_sample_tokens, write_submission

    ev = loaded_detection_eval(nusc, write_submission(tmp_path / name, results), "val")
    moving_speed = moving_speed or dict.fromkeys(VELOCITY_CLASSES, 10.0)
    fits = fit_still_speeds(ev, ev.pred_boxes, split_sample_tokens(nusc, "val"), [0.0] * 10, moving_speed, candidates=candidates)
    return ev, {f.name: f for f in fits}


def _noisy_parked(nusc) -> dict[str, list[dict]]:
    """The annotations as predictions, scores spread (the devkit's TP errors interpolate over score), standing
    boxes given 0.4 m/s of velocity noise in some direction."""
    results = _gt_as_predictions(nusc, min_points=1)
    for boxes in results.values():
        for k, b in enumerate(boxes):
            b["detection_score"] = 0.3 + 0.7 * ((k * 0.618) % 1.0)
            if math.hypot(*b["velocity"]) < 0.2:  # standing still (annotation jitter)
                b["velocity"] = [0.4 * math.cos(k), 0.4 * math.sin(k)]
    return results


def test_parked_velocity_noise_is_zeroed_by_a_still_speed_above_it(nusc, tmp_path):
    _, fits = _fit(nusc, _noisy_parked(nusc), tmp_path, "noisy.json")
    assert set(fits) == set(DETECTION_NAMES) - {"traffic_cone", "barrier"}  # no scored velocity: not fitted
    car = fits["car"]
    assert car.boxes > 0 and car.previous_still_speed == 0.0
    assert car.still_speed == 0.5  # 0.25 leaves the noise; 1.0 would also zero slow movers
    assert car.previous_vel_err > 0.2 and car.vel_err < car.previous_vel_err - 0.2


def test_still_speed_stays_at_or_below_the_attribute_threshold(nusc, tmp_path):
    """A box named moving keeps its velocity: under a 0.45 m/s threshold the 0.5 m/s the noise calls for (above)
    is not allowed, and 0.45 is the best of what is."""
    from lab.devkit import VELOCITY_CLASSES

    _, fits = _fit(nusc, _noisy_parked(nusc), tmp_path, "noisy.json", candidates=(0.0, 0.25, 0.45, 0.5, 1.0),
                   moving_speed=dict.fromkeys(VELOCITY_CLASSES, 0.45))
    assert fits["car"].still_speed == 0.45 and all(f.still_speed <= 0.45 for f in fits.values())
    _, fits = _fit(nusc, _noisy_parked(nusc), tmp_path, "noisy.json", moving_speed=dict.fromkeys(VELOCITY_CLASSES, 0.3))
    assert all(f.still_speed <= 0.3 for f in fits.values())


def test_exact_velocities_keep_their_movers(nusc, tmp_path):
    """The annotations' own velocities: a still speed above the slow movers' speed would zero them and is not
    chosen; the fit never does worse than the weights' own speed (one of the candidates)."""
    _, fits = _fit(nusc, _gt_as_predictions(nusc, min_points=1), tmp_path, "gt.json", candidates=(0.0, 0.25, 5.0))
    assert all(f.vel_err <= f.previous_vel_err for f in fits.values())
    assert fits["car"].still_speed < 5.0 and fits["car"].vel_err < 0.01
