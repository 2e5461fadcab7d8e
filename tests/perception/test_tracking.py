"""The box tracker: its Kalman filter against the textbook equations for one track, association by class
and gate, invariance to the ego's motion, a velocity closer to the truth than a noisy, biased head's, a
parked car's centre averaged over the ticks, and a track's score as its time-weighted running average."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from perception.tracking import BoxTracker, TrackingConfig, constant_velocity_transition

DT = 1 / 12


def boxes_at(centres, velocities, yaw=0.0) -> torch.Tensor:
    """(N, 2) ego-frame centres and velocities -> (N, 9) boxes (size of a car)."""
    c, v = np.asarray(centres, np.float64).reshape(-1, 2), np.asarray(velocities, np.float64).reshape(-1, 2)
    n = len(c)
    return torch.from_numpy(np.concatenate([c, np.zeros((n, 1)), np.tile([1.9, 4.6, 1.7, yaw], (n, 1)), v], axis=1))


def pose(x=0.0, y=0.0, yaw=0.0) -> np.ndarray:
    """(4, 4) ego->global."""
    m = np.eye(4)
    m[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    m[:2, 3] = x, y
    return m


def update_all(tracker, centres, velocities, t, ego=None, labels=None, scores=None):
    """One tick -> ((K, 9) boxes, (K,) scores, (K,) ids) as numpy."""
    b = boxes_at(centres, velocities)
    n = len(b)
    labels = torch.zeros(n, dtype=torch.int64) if labels is None else torch.as_tensor(labels)
    scores = torch.linspace(0.9, 0.5, n) if scores is None else torch.as_tensor(scores)
    scores = scores.to(torch.float64)
    out, out_scores, ids = tracker.update(b, scores, labels, pose() if ego is None else ego, t)
    return out.numpy(), out_scores.numpy(), ids


def update(tracker, centres, velocities, t, ego=None, labels=None, scores=None):
    """One tick -> ((K, 2) velocities, (K,) ids)."""
    boxes, _, ids = update_all(tracker, centres, velocities, t, ego, labels, scores)
    return boxes[:, 7:9], ids


def test_process_noise_is_the_integral_of_white_acceleration():
    dt, a = 0.3, 1.7
    f, q = constant_velocity_transition(dt, a)
    g = np.array([[0.0], [1.0]])  # acceleration drives the velocity
    s = np.linspace(0.0, dt, 20001)
    integrand = [constant_velocity_transition(dt - si, a)[0] @ g @ g.T @ constant_velocity_transition(dt - si, a)[0].T
                 for si in s]
    np.testing.assert_allclose(q, a ** 2 * np.trapz(integrand, s, axis=0), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(f @ [1.0, 3.0], [1.0 + 3 * dt, 3.0])


def test_one_track_follows_the_textbook_kalman_filter():
    """Against the (4, 4) filter over (x, y, vx, vy), matrices written out: F and Q per axis, Kronecker'd."""
    cfg = TrackingConfig(position_noise_m=0.4, velocity_noise_mps=0.8, acceleration_mps2=1.5)
    rng = np.random.default_rng(0)
    tracker = BoxTracker(cfg)
    r = np.diag([0.4 ** 2] * 2 + [0.8 ** 2] * 2)
    x, p = None, None
    for k in range(15):
        z = np.array([5.0 + 0.7 * k * DT, -2.0, 0.7, 0.0]) + rng.normal(0, 0.1, 4)
        got, ids = update(tracker, z[:2], z[2:], k * DT)
        if x is None:
            x, p = z, r
        else:
            f2, q2 = constant_velocity_transition(DT, 1.5)
            f, q = np.kron(f2, np.eye(2)), np.kron(q2, np.eye(2))  # state order x, y, vx, vy
            x, p = f @ x, f @ p @ f.T + q
            k_gain = p @ np.linalg.inv(p + r)
            x, p = x + k_gain @ (z - x), (np.eye(4) - k_gain) @ p
        np.testing.assert_allclose(got[0], x[2:], atol=1e-12)
        assert ids.tolist() == [0]


def test_first_tick_and_reset_keep_the_models_velocities():
    tracker = BoxTracker()
    v = [[3.0, 0.5], [0.0, -1.0]]
    got, ids = update(tracker, [[10.0, 0.0], [-5.0, 8.0]], v, 0.0)
    np.testing.assert_allclose(got, v)
    assert ids.tolist() == [0, 1] and len(tracker) == 2
    tracker.reset()
    got, ids = update(tracker, [[10.0, 0.0], [-5.0, 8.0]], v, DT)
    np.testing.assert_allclose(got, v)
    assert ids.tolist() == [0, 1]


def test_association_by_class_within_the_gate():
    tracker = BoxTracker(TrackingConfig(gate_m=2.0))
    update(tracker, [[0.0, 0.0], [20.0, 0.0]], [[0.0, 0.0]] * 2, 0.0, labels=[0, 5])
    # the same class 1.5 m away joins; another class at the same spot and a box 3 m away start tracks
    _, ids = update(tracker, [[1.5, 0.0], [20.0, 0.0], [23.0, 0.0]], [[0.0, 0.0]] * 3, DT, labels=[0, 0, 5])
    assert ids.tolist() == [0, 2, 3]


def test_the_better_box_takes_the_track():
    tracker = BoxTracker()
    update(tracker, [[0.0, 0.0]], [[0.0, 0.0]], 0.0)
    _, ids = update(tracker, [[0.5, 0.0], [0.2, 0.0]], [[0.0, 0.0]] * 2, DT, scores=[0.9, 0.3])
    assert ids.tolist() == [0, 1]  # the nearer box scores lower: it does not take the track


def test_tracks_end_after_max_age_and_time_going_back_starts_afresh():
    tracker = BoxTracker(TrackingConfig(max_age_s=0.25))
    update(tracker, [[0.0, 0.0]], [[0.0, 0.0]], 0.0)
    update(tracker, np.zeros((0, 2)), np.zeros((0, 2)), 0.2)
    assert len(tracker) == 1
    update(tracker, np.zeros((0, 2)), np.zeros((0, 2)), 0.3)
    assert len(tracker) == 0
    update(tracker, [[0.0, 0.0]], [[1.0, 0.0]], 0.4)
    got, ids = update(tracker, [[0.0, 0.0]], [[1.0, 0.0]], 0.1)  # back in time: no track survives
    assert ids.tolist() == [0] and got.tolist() == [[1.0, 0.0]]


def test_the_egos_motion_drops_out():
    """One object moving in the world, seen by a standing ego and by a driving, turning one: the same global velocities."""
    rng = np.random.default_rng(1)
    a, b = BoxTracker(), BoxTracker()
    for k in range(20):
        t = k * DT
        centre_g = np.array([30.0 + 6.0 * t, 4.0]) + rng.normal(0, 0.3, 2)
        vel_g = np.array([5.0, 0.0]) + rng.normal(0, 0.5, 2)
        ego = pose(8.0 * t, 0.5 * t, 0.05 * t)
        rot = ego[:2, :2]
        got_a, _ = update(a, centre_g, vel_g, t)
        got_b, _ = update(b, (centre_g - ego[:2, 3]) @ rot, vel_g @ rot, t, ego=ego)  # global -> ego
        np.testing.assert_allclose(got_b @ rot.T, got_a, atol=1e-9)


def test_fused_velocity_is_closer_to_the_truth_than_a_noisy_biased_head():
    """Cars at 4-10 m/s whose head speed is pulled toward 7 m/s with 1 m/s noise, centres with 0.3 m noise."""
    rng = np.random.default_rng(2)
    tracker = BoxTracker()
    true_v = np.array([[4.0, 0.0], [0.0, 10.0], [-7.0, 3.0]])
    start = np.array([[0.0, 0.0], [30.0, -20.0], [-30.0, 25.0]])
    raw_err, fused_err = [], []
    for k in range(36):
        t = k * DT
        speed = np.linalg.norm(true_v, axis=1, keepdims=True)
        head_v = true_v / speed * (0.5 * speed + 3.5) + rng.normal(0, 1.0, true_v.shape)
        centres = start + true_v * t + rng.normal(0, 0.3, true_v.shape)
        got, ids = update(tracker, centres, head_v, t)
        assert ids.tolist() == [0, 1, 2]
        if k >= 12:  # after a second on the track
            raw_err.append(np.linalg.norm(head_v - true_v, axis=1).mean())
            fused_err.append(np.linalg.norm(got - true_v, axis=1).mean())
    assert np.mean(fused_err) < 0.6 * np.mean(raw_err)


def test_snapshot_restore_continues_the_tracks():
    a = BoxTracker()
    for k in range(5):
        update(a, [[k * 0.5, 0.0], [10.0, k * 0.1]], [[5.0, 0.0], [0.0, 0.5]], k * DT, scores=[0.9 - 0.1 * k, 0.3])
    b = BoxTracker()
    b.restore(a.snapshot())
    tick = ([[2.6, 0.0], [10.0, 0.6], [-9.0, 0.0]], [[5.0, 0.0], [0.0, 0.5], [0.0, 0.0]], 5 * DT)
    boxes_a, scores_a, ia = update_all(a, *tick, scores=[0.8, 0.7, 0.6])
    boxes_b, scores_b, ib = update_all(b, *tick, scores=[0.8, 0.7, 0.6])
    np.testing.assert_array_equal(boxes_a, boxes_b)
    np.testing.assert_array_equal(scores_a, scores_b)
    assert ia.tolist() == ib.tolist() == [0, 1, 2]
    assert not np.allclose(scores_a, [0.8, 0.7, 0.6])  # the restored tracks' score averages were used


@pytest.mark.parametrize("key", ["position_noise_m", "velocity_noise_mps", "acceleration_mps2", "gate_m", "max_age_s"])
def test_config_needs_positive_finite_values(key):
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=key):
            TrackingConfig(**{key: bad})


@pytest.mark.parametrize("key, bad", [("still_track_speed_mps", -0.1), ("still_track_speed_mps", float("inf")),
                                      ("score_memory_s", -1.0), ("score_memory_s", float("nan")),
                                      ("score_track_weight", 1.5), ("score_track_weight", float("nan"))])
def test_config_rejects_bad_smoothing_values(key, bad):
    with pytest.raises(ValueError, match=key):
        TrackingConfig(**{key: bad})


def test_a_parked_cars_centre_averages_out_a_moving_cars_does_not():
    """A parked car and one at 8 m/s, seen by a driving ego with 0.35 m noise on the centres: the parked car's
    reported centre is nearer the truth than the decoded one after a second; the moving car's is the decoded."""
    rng = np.random.default_rng(3)
    tracker = BoxTracker(TrackingConfig(gate_m=3.0))  # association is not under test: no noise draw splits a track
    parked, start = np.array([25.0, 6.0]), np.array([-20.0, -6.0])
    raw_err, reported_err = [], []
    for k in range(36):
        t = k * DT
        ego = pose(10.0 * t, 0.0, 0.02 * t)
        truth = np.stack([parked, start + [8.0 * t, 0.0]])  # (2, 2) global
        seen = truth + rng.normal(0, 0.35, truth.shape)
        head_v = np.array([[0.0, 0.0], [8.0, 0.0]]) + rng.normal(0, 0.3, (2, 2))
        rot = ego[:2, :2]
        centres_ego = (seen - ego[:2, 3]) @ rot
        boxes, _, ids = update_all(tracker, centres_ego, head_v @ rot, t, ego=ego)
        assert ids.tolist() == [0, 1]
        np.testing.assert_array_equal(boxes[1, :2], centres_ego[1])  # moving: the decoded centre
        reported = boxes[0, :2] @ rot.T + ego[:2, 3]
        if k >= 12:
            raw_err.append(np.linalg.norm(seen[0] - parked))
            reported_err.append(np.linalg.norm(reported - parked))
    assert np.mean(reported_err) < 0.6 * np.mean(raw_err)


def test_a_tracks_score_is_its_time_weighted_running_average():
    """Against the formula written out, over ticks 1, 2 and 4 apart (dropped frames count as the time they span)."""
    cfg = TrackingConfig(score_memory_s=0.4, score_track_weight=0.3)
    tracker = BoxTracker(cfg)
    times, scores = np.array([0, 1, 3, 7, 8]) * DT, [0.9, 0.2, 0.6, 0.1, 0.8]
    mean = None
    for t, s in zip(times, scores):
        _, got, _ = update_all(tracker, [[5.0, 1.0]], [[0.0, 0.0]], t, scores=[s])
        if mean is None:
            mean, expect, last = s, s, t  # a new track reports its box's own score
        else:
            keep = np.exp(-(t - last) / 0.4)
            mean = keep * mean + (1 - keep) * s
            expect, last = 0.7 * s + 0.3 * mean, t
        np.testing.assert_allclose(got, [expect], atol=1e-12)


def test_a_steady_track_outranks_a_flickering_box_of_the_same_score():
    tracker = BoxTracker()
    for k in range(6):
        update_all(tracker, [[0.0, 0.0]], [[0.0, 0.0]], k * DT, scores=[0.8])
    _, got, ids = update_all(tracker, [[0.0, 0.0], [15.0, 0.0]], [[0.0, 0.0]] * 2, 6 * DT, scores=[0.5, 0.5])
    assert ids.tolist() == [0, 1] and got[0] > got[1] == 0.5


def test_switched_off_smoothing_leaves_centres_and_scores_as_decoded():
    tracker = BoxTracker(TrackingConfig(still_track_speed_mps=0.0, score_track_weight=0.0))
    rng = np.random.default_rng(4)
    for k in range(10):
        centres, scores = rng.normal(0, 0.3, (3, 2)) + [[0, 0], [10, 0], [0, 10]], rng.uniform(0.2, 0.9, 3)
        boxes, got, ids = update_all(tracker, centres, [[0.0, 0.0]] * 3, k * DT, scores=scores)
        np.testing.assert_array_equal(boxes[:, :2], centres)
        np.testing.assert_array_equal(got, scores)
        assert ids.tolist() == [0, 1, 2]


def test_decode_runs_the_filter_before_the_still_speeds():
    from perception.detection import DetectionHead, DetectionHeadConfig
    from perception.grid import BEVGrid

    torch.manual_seed(0)
    grid = BEVGrid(x_min=-25.6, x_max=25.6, y_min=-25.6, y_max=25.6, resolution=1.6)
    head = DetectionHead(8, grid, DetectionHeadConfig(score_threshold=0.05, max_detections=100,
                                                      still_speed_mps=(0.5,) * 10)).eval()
    preds = {"cls_logits": torch.randn(1, head.anchors.shape[0], head.num_classes) - 2.0,
             "box_deltas": torch.randn(1, head.anchors.shape[0], 10) * 0.5}
    seen = []

    def slow_down(boxes, scores, labels):  # what a tracker could report: every box at 0.3 m/s, scores halved
        seen.append(len(boxes))
        out = boxes.clone()
        out[:, 7:9] = torch.tensor([0.3, 0.0])
        return out, scores / 2

    (plain,), (filtered,) = head.decode(preds), head.decode(preds, track_filters=[slow_down])
    assert seen == [len(plain)] and len(plain) > 0
    assert torch.equal(filtered.boxes[:, :7], plain.boxes[:, :7]) and bool((filtered.boxes[:, 7:] == 0).all())
    torch.testing.assert_close(filtered.scores, plain.scores / 2)
    with pytest.raises(ValueError, match="2 track filters for a batch of 1"):
        head.decode(preds, track_filters=[slow_down, slow_down])


def greedy_match_reference(centres, labels, scores, track_centres, track_labels, gate):
    """Box by box in score order: the nearest free track of its class within the gate (lowest index on ties)."""
    match, taken = [-1] * len(centres), set()
    for i in sorted(range(len(centres)), key=lambda i: -scores[i]):
        best = None
        for j in range(len(track_centres)):
            d = float(np.hypot(*(centres[i] - track_centres[j])))
            if j not in taken and track_labels[j] == labels[i] and d < gate and (best is None or d < best[0]):
                best = (d, j)
        if best is not None:
            match[i] = best[1]
            taken.add(best[1])
    return match


@pytest.mark.parametrize("seed", range(5))
def test_greedy_match_against_a_box_by_box_reference(seed):
    from perception.tracking import greedy_match

    rng = np.random.default_rng(seed)
    n, m = 60, 45
    tracks = rng.uniform(0, 20, (m, 2))
    centres = np.concatenate([tracks[:40] + rng.normal(0, 0.8, (40, 2)), rng.uniform(0, 20, (n - 40, 2))])
    labels, track_labels = rng.integers(0, 3, n), rng.integers(0, 3, m)
    track_labels[:40] = labels[:40]
    scores = rng.choice([0.2, 0.5, 0.9], n)  # ties in score keep the boxes' order
    got = greedy_match(centres, labels, scores, tracks, track_labels, 2.0)
    assert got.tolist() == greedy_match_reference(centres, labels, scores, tracks, track_labels, 2.0)
    assert 20 < int((got >= 0).sum()) < n  # matches and misses both exercised


def test_a_ticks_filter_keeps_the_ids_it_assigned():
    tracker = BoxTracker()
    centres, v = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], [[1.0, 0.0]] * 3
    for k, expect in enumerate([[0, 1, 2], [0, 1, 2]]):
        tick = tracker.track_filter(pose(), k * DT)
        assert tick.track_ids is None
        tick(boxes_at(centres, v), torch.tensor([0.9, 0.5, 0.7]), torch.zeros(3, dtype=torch.int64))
        assert tick.track_ids.tolist() == expect


def test_a_new_scene_tick_starts_from_no_tracks():
    tracker = BoxTracker()
    update(tracker, [[0.0, 0.0]], [[1.0, 0.0]], 0.0)
    tick = tracker.track_filter(pose(), DT, new_scene=True)
    assert len(tracker) == 0
    tick(boxes_at([[0.1, 0.0]], [[1.0, 0.0]]), torch.tensor([0.9]), torch.zeros(1, dtype=torch.int64))
    assert tick.track_ids.tolist() == [0] and len(tracker) == 1
