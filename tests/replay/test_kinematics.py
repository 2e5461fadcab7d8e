"""Ego kinematics from poses: analytic motions, uneven steps, end samples, bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pyquaternion import Quaternion

from replay.kinematics import NonFinitePoseError, derive_kinematics, kinematics_at_last, kinematics_in_track
from schema.messages import Pose


def _pose(x: float, y: float, yaw: float, z: float = 0.0) -> Pose:
    return Pose(np.array([x, y, z]), Quaternion(axis=[0, 0, 1], angle=yaw))


def _circle(ts_us: np.ndarray, speed: float, radius: float, phase: float = 0.3) -> list[Pose]:
    """Counter-clockwise circle around the origin at constant speed, heading tangent to it."""
    poses = []
    for t in ts_us * 1e-6:
        a = phase + speed / radius * t
        poses.append(_pose(radius * math.cos(a), radius * math.sin(a), a + math.pi / 2))
    return poses


def _uneven_times(n: int, seed: int = 0) -> np.ndarray:
    """12 Hz with +-15 ms jitter: uneven steps, still increasing."""
    rng = np.random.default_rng(seed)
    return (np.arange(n) * 83_333 + rng.integers(-15_000, 15_000, n) + 10**15).astype(np.int64)


def test_constant_speed_circle_speed_yaw_rate_and_centripetal_acceleration():
    speed, radius = 10.0, 40.0
    ts = _uneven_times(30)
    kin = derive_kinematics(ts, _circle(ts - ts[0], speed, radius))
    for k in kin[1:-1]:
        assert k.velocity[0] == pytest.approx(speed, rel=2e-3)
        assert abs(k.velocity[1]) < 0.05  # no sideways slip in the ego frame
        assert k.yaw_rate == pytest.approx(speed / radius, rel=1e-6)  # heading is linear in time: exact
        assert k.acceleration[1] == pytest.approx(speed**2 / radius, rel=0.02)  # towards the centre (left)
        assert abs(k.acceleration[0]) < 0.05
    for k in (kin[0], kin[-1]):  # one-sided at the ends: first-order, still close
        assert k.speed == pytest.approx(speed, rel=0.02)
        assert k.yaw_rate == pytest.approx(speed / radius, rel=1e-6)


def test_clockwise_circle_has_negative_yaw_rate_and_rightward_acceleration():
    ts = np.arange(12) * 83_333
    poses = [_pose(p.translation[0], -p.translation[1], -p.yaw) for p in _circle(ts, 8.0, 20.0)]
    k = derive_kinematics(ts, poses)[5]
    assert k.yaw_rate == pytest.approx(-8.0 / 20.0, rel=1e-6)
    assert k.acceleration[1] == pytest.approx(-(8.0**2) / 20.0, rel=0.02)


def test_constant_acceleration_is_exact_at_every_sample_including_the_ends():
    """A quadratic in time is reproduced exactly by the three-point stencil, also one-sided."""
    ts = _uneven_times(15, seed=3)
    t = (ts - ts[0]) * 1e-6
    v0, a, yaw = 3.0, 1.5, 0.7
    s = v0 * t + 0.5 * a * t**2
    poses = [_pose(si * math.cos(yaw), si * math.sin(yaw), yaw) for si in s]
    kin = derive_kinematics(ts, poses)
    for k, ti in zip(kin, t):
        np.testing.assert_allclose(k.velocity, [v0 + a * ti, 0, 0], atol=1e-6)
        np.testing.assert_allclose(k.acceleration, [a, 0, 0], atol=1e-6)
        assert k.yaw_rate == pytest.approx(0.0, abs=1e-9)


def test_yaw_rate_across_the_pi_wrap():
    ts = np.arange(10) * 100_000
    poses = [_pose(0, 0, math.pi - 0.2 + 0.1 * i) for i in range(10)]  # crosses +pi -> -pi
    for k in derive_kinematics(ts, poses):
        assert k.yaw_rate == pytest.approx(1.0, rel=1e-6)


def test_short_histories():
    assert derive_kinematics([], []) == []
    (k,) = derive_kinematics([5], [_pose(1, 2, 0.3)])
    assert k.speed == 0 and k.yaw_rate == 0
    k0, k1 = derive_kinematics([0, 500_000], [_pose(0, 0, 0), _pose(2, 0, 0)])
    np.testing.assert_allclose(k1.velocity, [4, 0, 0])
    np.testing.assert_allclose(k1.acceleration, 0)


def test_causal_last_sample_matches_full_track_end():
    ts = _uneven_times(10, seed=5)
    poses = _circle(ts - ts[0], 12.0, 30.0)
    full = derive_kinematics(ts, poses)
    causal = kinematics_at_last(list(ts[:7]), poses[:7])
    np.testing.assert_allclose(causal.velocity, derive_kinematics(ts[4:7], poses[4:7])[-1].velocity)
    assert causal.speed == pytest.approx(full[6].speed, rel=0.02)


def test_dense_track_uses_a_wide_stencil():
    """Millisecond-spaced poses with millimetre noise: the +-50 ms stencil keeps velocity accurate."""
    rng = np.random.default_rng(1)
    ts = np.cumsum(rng.integers(2_000, 9_000, 400)).astype(np.int64)
    poses = _circle(ts - ts[0], 10.0, 50.0)
    noisy = [Pose(p.translation + rng.normal(0, 0.002, 3) * [1, 1, 0], p.rotation) for p in poses]
    for i in (0, 57, 200, 399):
        k = kinematics_in_track(ts, noisy, i)
        assert k.speed == pytest.approx(10.0, abs=0.15)
        assert k.yaw_rate == pytest.approx(0.2, abs=1e-3)


def test_non_finite_pose_is_rejected_with_its_index():
    ts = [0, 100_000, 200_000]
    poses = [_pose(0, 0, 0), _pose(float("nan"), 0, 0), _pose(2, 0, 0)]
    with pytest.raises(NonFinitePoseError) as e:
        derive_kinematics(ts, poses)
    assert e.value.index == 1 and e.value.timestamp_us == 100_000
    bad_rot = Pose(np.zeros(3), Quaternion(1, 0, 0, 0))
    object.__setattr__(bad_rot, "rotation", Quaternion(np.array([np.inf, 0, 0, 0])))
    with pytest.raises(NonFinitePoseError):
        derive_kinematics([0, 1], [_pose(0, 0, 0), bad_rot])


def test_non_increasing_timestamps_are_an_error():
    with pytest.raises(ValueError, match="strictly increasing"):
        derive_kinematics([0, 100, 100], [_pose(0, 0, 0)] * 3)
    with pytest.raises(ValueError, match="2 timestamps but 1 poses"):
        derive_kinematics([0, 1], [_pose(0, 0, 0)])


def test_against_the_simulators_own_ego_state_through_a_turn():
    """Poses sampled at 12 Hz through a turn of the simulated world (seed 0; the sharpest turn found on a
    coarse scan of the first 150 s) give the world's own ego velocity, acceleration (incl.
    centripetal) and yaw rate."""
    world_mod = pytest.importorskip("replay.sim.world")
    world = world_mod.World(0)
    scan = np.arange(0.0, 150.0, 2.0)
    t_turn = scan[int(np.argmax([abs(world.state_at(t).ego_yaw_rate) for t in scan]))]
    ts = (int((t_turn - 5.0) * 1e6) + np.arange(120) * 83_333).astype(np.int64)
    states = [world.state_at(t * 1e-6) for t in ts]
    derived = derive_kinematics(ts, [s.ego_pose for s in states])
    truth = [s.ego_kinematics() for s in states]
    assert max(abs(k.yaw_rate) for k in truth) > 0.15  # the window really holds a turn
    assert max(abs(k.acceleration[1]) for k in truth) > 1.0
    for d, k in zip(derived[1:-1], truth[1:-1]):
        np.testing.assert_allclose(d.velocity, k.velocity, atol=0.01)
        np.testing.assert_allclose(d.acceleration, k.acceleration, atol=0.1)
        assert d.yaw_rate == pytest.approx(k.yaw_rate, abs=0.005)
