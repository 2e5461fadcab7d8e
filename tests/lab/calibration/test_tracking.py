"""Fitting the tracker's levels: the search, the replay of recorded frames, their file, and the devkit scoring."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from pyquaternion import Quaternion

from lab.calibration.tracking import coordinate_search, fit_tracking, replay_tracker
from lab.recording import TickBoxes, ticks_from_file, ticks_to_file
from perception.tracking import TrackingConfig
from schema.attributes import AttributeConfig
from schema.classes import DETECTION_NAMES
from schema.messages import Pose

CAR = DETECTION_NAMES.index("car")
OFF = (0.0,) * len(DETECTION_NAMES)


def test_coordinate_search_finds_the_best_of_a_separable_grid_and_scores_each_point_once():
    calls = []

    def objective(levels):
        calls.append(tuple(sorted(levels.items())))
        return -(levels["a"] - 1.0) ** 2 - (levels["b"] - 2.0) ** 2

    best, trials = coordinate_search({"a": 0.0, "b": 0.0}, {"a": (0.0, 0.5, 1.0, 3.0), "b": (1.0, 2.0, 4.0)}, objective)
    assert best == {"a": 1.0, "b": 2.0}
    assert len(calls) == len(set(calls)) == len(trials)  # the second sweep re-scores nothing
    assert trials[0].levels == {"a": 0.0, "b": 0.0} and max(t.score for t in trials) == 0.0


def test_coordinate_search_keeps_the_start_unless_a_level_gains_more_than_min_gain():
    best, trials = coordinate_search({"a": 0.0}, {"a": (0.0, 1.0, 2.0)}, lambda lv: 1e-4 * lv["a"], min_gain=5e-4)
    assert best == {"a": 0.0} and len(trials) == 3
    best, _ = coordinate_search({"a": 0.0}, {"a": (0.0, 1.0, 2.0)}, lambda lv: 1e-3 * lv["a"], min_gain=5e-4)
    assert best == {"a": 2.0}
    best, _ = coordinate_search({"a": 1.0}, {"a": (0.0, 1.0, 2.0)}, lambda lv: 0.0)
    assert best == {"a": 1.0}  # ties keep the weights' level


def _car_ticks(speed_mps: float, noise_m: float = 0.5, n: int = 24, seed: int = 0) -> tuple[list[TickBoxes], np.ndarray]:
    """A car at (10, 5) driving along x at `speed_mps`, seen by a still ego at 12 Hz with noisy centres and
    its true velocity; every tick a keyframe. -> (ticks, (n, 2) true centres)."""
    rng = np.random.default_rng(seed)
    ticks, truth = [], []
    for i in range(n):
        t = i / 12.0
        centre = np.array([10.0 + speed_mps * t, 5.0])
        box = torch.tensor([[*(centre + rng.normal(0.0, noise_m, 2)), 0.8, 1.9, 4.6, 1.7, 0.0, speed_mps, 0.0]],
                           dtype=torch.float64)
        ticks.append(TickBoxes(i == 0, 100.0 + t, Pose(np.zeros(3), Quaternion()), f"s{i}", box,
                               torch.tensor([0.6], dtype=torch.float64), torch.tensor([CAR])))
        truth.append(centre)
    return ticks, np.array(truth)


def _centre_error(results, truth) -> float:
    return float(np.mean([np.linalg.norm(np.array(results[f"s{i}"][0]["translation"][:2]) - c)
                          for i, c in enumerate(truth)]))


def test_fit_tracking_turns_on_still_centres_where_they_place_a_parked_car_better():
    """The objective is the placement of the car's box (standing in for the devkit's NDS): for a parked car
    the fit takes a still speed that reports the filtered centre; for a driving car no level gains."""
    candidates = {"still_track_speed_mps": (0.0, 1.0)}
    start = TrackingConfig(still_track_speed_mps=0.0)
    for speed, expected in ((0.0, 1.0), (10.0, 0.0)):
        ticks, truth = _car_ticks(speed)
        fit = fit_tracking(ticks, start, lambda r, truth=truth: -_centre_error(r, truth), OFF, OFF, AttributeConfig(),
                           candidates=candidates)
        assert fit.levels == {"still_track_speed_mps": expected}, speed
        assert fit.previous_levels == {"still_track_speed_mps": 0.0} and fit.nds >= fit.previous_nds
    assert fit.nds == fit.previous_nds  # the driving car: the still rule never fires
    with pytest.raises(ValueError, match="no tracker level named"):
        fit_tracking(ticks, start, lambda r: 0.0, OFF, OFF, AttributeConfig(), candidates={"gate": (1.0,)})


def test_replay_applies_circle_nms_before_the_tracker_and_still_speeds_after():
    ticks, _ = _car_ticks(0.3, noise_m=0.0, n=3)
    twin = [dataclasses.replace(t, boxes=torch.cat([t.boxes, t.boxes + torch.tensor([1.0] + [0.0] * 8)]),
                                scores=torch.tensor([0.6, 0.5], dtype=torch.float64), labels=torch.tensor([CAR, CAR]))
            for t in ticks]  # a duplicate 1 m beside the car
    radius = [0.0] * len(DETECTION_NAMES)
    assert all(len(v) == 2 for v in replay_tracker(twin, TrackingConfig(), radius, OFF, AttributeConfig()).values())
    radius[CAR] = 1.5
    still = list(OFF)
    still[CAR] = 0.5
    results = replay_tracker(twin, TrackingConfig(enabled=False), radius, still, AttributeConfig())
    assert all(len(v) == 1 and v[0]["velocity"] == [0.0, 0.0] for v in results.values())  # 0.3 m/s < 0.5: still
    assert [v[0]["detection_score"] for v in results.values()] == pytest.approx([0.6] * 3)  # tracking off: as recorded


def test_ticks_file_round_trip_and_a_bad_file(tmp_path):
    ticks, _ = _car_ticks(5.0, n=4)
    ticks[2] = dataclasses.replace(ticks[2], sample_token=None,
                                   ego_to_global=Pose(np.array([3.0, -2.0, 0.5]), Quaternion(axis=(0, 0, 1), angle=0.7)))
    ticks_to_file(ticks, tmp_path / "ticks.pt")
    back = ticks_from_file(tmp_path / "ticks.pt")
    assert len(back) == 4
    for a, b in zip(ticks, back):
        assert (a.new_scene, a.timestamp_s, a.sample_token) == (b.new_scene, b.timestamp_s, b.sample_token)
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)
        np.testing.assert_allclose(a.ego_to_global.matrix, b.ego_to_global.matrix, atol=1e-12)
    (tmp_path / "bad.pt").write_text("not a tensor file")
    with pytest.raises(ValueError, match="bad.pt: not the frames file"):
        ticks_from_file(tmp_path / "bad.pt")


def test_replay_of_recorded_frames_reproduces_the_model_run(real_scene_root):
    """run_model's keyframe boxes (circle NMS, tracker, still speeds in decode) == the frames it recorded,
    replayed with the same levels."""
    from nuscenes.nuscenes import NuScenes

    from lab.groundtruth import GroundTruth
    from lab.model_run import run_model
    from perception.model import BEVStreamModel
    from replay.nuscenes.source import NuScenesSource
    from tests.perception.model_fixtures import tiny_config

    torch.manual_seed(0)
    cfg = tiny_config()
    detection = dataclasses.replace(cfg.detection, score_threshold=0.0, nms_radius_m=(1.0,) * len(DETECTION_NAMES),
                                    still_speed_mps=(0.5,) * len(DETECTION_NAMES), max_detections=60)
    model = BEVStreamModel(dataclasses.replace(cfg, detection=detection)).eval()
    nusc = NuScenes("v1.0-trainval", str(real_scene_root), verbose=False)
    source = NuScenesSource(real_scene_root, "v1.0-trainval", split="val", keyframes_only=True)
    source.frame_sets = lambda inner=source.frame_sets: (fs for _, fs in zip(range(6), inner()))  # six frames
    ticks: list[TickBoxes] = []
    run = run_model(model, source, GroundTruth(nusc, model.config.grid), progress=False, record_ticks=ticks)
    assert len(ticks) == 6 and ticks[0].new_scene and not any(t.new_scene for t in ticks[1:])
    assert sum(len(t.boxes) for t in ticks) > 100
    replayed = replay_tracker(ticks, model.config.tracking, detection.nms_radius_m, detection.still_speed_mps,
                              model.config.attributes)
    assert replayed.keys() == run.results.keys()
    for token, boxes in run.results.items():
        assert replayed[token] == boxes, token
