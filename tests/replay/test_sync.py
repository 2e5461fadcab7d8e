"""Camera synchronisation: complete and degraded sets, late frames, deadlines, scene changes."""
from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest
from pyquaternion import Quaternion

from schema.messages import CAMERA_CHANNELS, CameraFrame, Pose
from replay.sync import CameraSynchronizer, SensorClock, cluster_cycles, synchronize

PERIOD = 83_333
T0 = 1_535_639_716_000_000
# nuScenes-like firing offsets within the cycle (us): CAM_FRONT_LEFT first, CAM_BACK_LEFT last.
OFFSETS = {"CAM_FRONT": -38_000, "CAM_FRONT_RIGHT": -30_000, "CAM_BACK_RIGHT": -22_500,
           "CAM_BACK": -13_000, "CAM_BACK_LEFT": -3_300, "CAM_FRONT_LEFT": -45_900}
SPEED = 10.0  # m/s along x
IMG = np.zeros((2, 3, 3), np.uint8)


def frame(channel: str, cycle: int, scene: str = "s1", t0: int = T0, jitter: int = 0, period: int = PERIOD,
          x: float | None = None, key: bool = False) -> CameraFrame:
    ts = t0 + cycle * period + OFFSETS[channel] + jitter
    xpos = SPEED * (ts - T0) * 1e-6 if x is None else x
    return CameraFrame(
        channel=channel, frame_id=cycle, timestamp_us=ts, image=IMG, intrinsic=np.eye(3),
        sensor_to_ego=Pose.identity(), ego_to_global=Pose(np.array([xpos, 0.0, 0.0]), Quaternion()),
        scene=scene, is_key_frame=key, sample_token=f"sample{cycle}" if key else None)


def cycle_frames(cycle: int, **kw) -> list[CameraFrame]:
    return sorted((frame(c, cycle, **kw) for c in CAMERA_CHANNELS), key=lambda f: f.timestamp_us)


def feed_all(sync: CameraSynchronizer, frames):
    sets, late, rejected = [], [], []
    for f in frames:
        r = sync.feed(f)
        sets += r.sets
        late += r.late
        rejected += r.rejected
    return sets, late, rejected


def test_complete_sets_in_order_with_ids_and_kinematics():
    sync = CameraSynchronizer(offsets_us=OFFSETS)
    frames = [f for k in range(6) for f in cycle_frames(k)]
    sets = list(synchronize(frames, sync))
    assert len(sets) == 6
    assert [s.frame_id for s in sets] == list(range(6))
    assert all(not s.degraded and s.channels == CAMERA_CHANNELS for s in sets)
    assert [s.new_scene for s in sets] == [True] + [False] * 5
    ts = [s.timestamp_us for s in sets]
    assert ts == sorted(ts)
    for s in sets:  # reference = earliest camera (CAM_FRONT_LEFT), its pose
        assert s.timestamp_us == min(c.timestamp_us for c in s.cameras)
        assert s.ego_to_global is s.camera("CAM_FRONT_LEFT").ego_to_global
    assert sets[0].kinematics.speed == 0.0  # a single pose: no motion known yet
    for s in sets[2:]:
        assert s.kinematics.velocity[0] == pytest.approx(SPEED, rel=1e-6)
    assert sync.stats.complete == 6 and sync.stats.degraded == 0


def test_out_of_order_arrival_within_and_across_cycles():
    rng = random.Random(4)
    frames = [f for k in range(20) for f in cycle_frames(k)]
    # each frame delayed by up to 30 ms on the bus: arrival order differs from timestamp order
    arrivals = sorted(frames, key=lambda f: f.timestamp_us + rng.randint(0, 30_000))
    assert arrivals != frames
    sync = CameraSynchronizer(offsets_us=OFFSETS, max_wait_us=60_000)
    sets, late, rejected = feed_all(sync, arrivals)
    sets += sync.flush().sets
    assert not late and not rejected
    assert len(sets) == 20 and all(not s.degraded for s in sets)
    assert all({c.frame_id for c in s.cameras} == {i} for i, s in enumerate(sets))


def test_missing_camera_gives_a_degraded_set_when_the_next_cycle_completes():
    sync = CameraSynchronizer(offsets_us=OFFSETS, max_wait_us=10 * PERIOD)  # only completion can emit
    first = [f for f in cycle_frames(0) if f.channel != "CAM_BACK"]
    sets, _, _ = feed_all(sync, first)
    assert sets == []  # still waiting for CAM_BACK
    sets, _, _ = feed_all(sync, cycle_frames(1))
    assert [s.frame_id for s in sets] == [0, 1]
    assert sets[0].missing == ("CAM_BACK",) and sets[0].degraded
    assert "CAM_BACK" not in sets[0].channels and len(sets[0].cameras) == 5
    assert not sets[1].degraded
    assert sync.stats.missing_by_channel == {"CAM_BACK": 1}


def test_deadline_emits_without_later_frames_and_never_waits_forever():
    sync = CameraSynchronizer(offsets_us=OFFSETS, max_wait_us=40_000)
    partial = [f for f in cycle_frames(0) if f.channel in ("CAM_FRONT", "CAM_FRONT_LEFT")]
    sets, _, _ = feed_all(sync, partial)
    assert sets == []
    last_expected = T0 + OFFSETS["CAM_BACK_LEFT"]
    assert sync.poll(now_us=last_expected + 39_999).sets == []
    (s,) = sync.poll(now_us=last_expected + 40_000).sets
    assert s.channels == ("CAM_FRONT", "CAM_FRONT_LEFT") and len(s.missing) == 4
    # flush at the end of a stream emits whatever is open
    feed_all(sync, [frame("CAM_BACK", 1)])
    (s2,) = sync.flush().sets
    assert s2.channels == ("CAM_BACK",) and s2.frame_id == 1


def test_each_missing_camera_is_waited_for_from_its_own_exposure():
    """A set missing only an early camera goes out when the later ones are in (its wait is over);
    a set missing the last camera waits max_wait past that camera's exposure, no longer."""
    sync = CameraSynchronizer(offsets_us=OFFSETS, max_wait_us=12_000)
    no_first = [f for f in cycle_frames(0) if f.channel != "CAM_FRONT_LEFT"]
    sets, _, _ = feed_all(sync, no_first[:-1])
    assert sets == []  # CAM_BACK_LEFT (last) not in yet: its wait is not over
    assert sync.next_deadline_us() == T0 + OFFSETS["CAM_BACK_LEFT"] + 12_000
    (s,) = sync.feed(no_first[-1]).sets  # the last camera arrives: CAM_FRONT_LEFT's wait ended long ago
    assert s.missing == ("CAM_FRONT_LEFT",) and sync.next_deadline_us() is None
    no_last = [f for f in cycle_frames(1) if f.channel != "CAM_BACK_LEFT"]
    assert feed_all(sync, no_last)[0] == []
    due = T0 + PERIOD + OFFSETS["CAM_BACK_LEFT"] + 12_000
    assert sync.next_deadline_us() == due
    assert sync.poll(now_us=due - 1).sets == []
    (s,) = sync.poll(now_us=due).sets
    assert s.missing == ("CAM_BACK_LEFT",) and s.frame_id == 1


def test_sensor_clock_maps_the_wall_clock_by_the_smallest_bus_delay():
    clock = SensorClock()
    assert clock.now_us(5) is None and clock.seconds_until(T0) == 0.2  # nothing seen: wait the cap
    wall0 = 2_000_000_000_000_000_000  # ns
    for lag_us, ts in [(5_000, T0), (2_000, T0 + 10_000), (7_000, T0 + 20_000)]:
        f = replace(frame("CAM_FRONT", 0), timestamp_us=ts, arrival_ns=wall0 + (ts - T0 + lag_us) * 1000)
        clock.observe(f)
    clock.observe(frame("CAM_BACK", 0))  # no arrival time: ignored
    assert clock.offset_us == pytest.approx(wall0 / 1e3 - T0 + 2_000)
    assert clock.now_us(wall0 + 52_000_000) == pytest.approx(T0 + 50_000)


def test_late_frame_is_reported_after_its_set_was_emitted():
    sync = CameraSynchronizer(offsets_us=OFFSETS)
    c0 = cycle_frames(0)
    straggler = next(f for f in c0 if f.channel == "CAM_BACK_RIGHT")
    sets, late, _ = feed_all(sync, [f for f in c0 if f is not straggler] + cycle_frames(1))
    assert [s.frame_id for s in sets] == [0, 1] and sets[0].missing == ("CAM_BACK_RIGHT",)
    r = sync.feed(straggler)
    assert r.sets == [] and r.late == [straggler]
    assert sync.stats.late == 1
    # and one whose cycle was emitted by its deadline (the newest timestamp moved on)
    sync2 = CameraSynchronizer(offsets_us=OFFSETS, max_wait_us=20_000)
    c = cycle_frames(0)
    sets, late, _ = feed_all(sync2, c[:-1] + [frame("CAM_FRONT_LEFT", 1), frame("CAM_FRONT", 1)] + [c[-1]])
    assert len(sets) == 1 and sets[0].missing == (c[-1].channel,)
    assert late == [c[-1]]


def test_duplicate_and_non_finite_frames_are_rejected_with_a_reason():
    sync = CameraSynchronizer(offsets_us=OFFSETS)
    f = frame("CAM_FRONT", 0)
    sync.feed(f)
    r = sync.feed(frame("CAM_FRONT", 0, jitter=1_000))
    assert len(r.rejected) == 1 and "duplicate" in r.rejected[0][1]
    bad = frame("CAM_BACK", 0, x=float("nan"))
    r = sync.feed(bad)
    assert r.rejected == [(bad, "non-finite pose")]
    assert sync.stats.rejected == 2


@pytest.mark.parametrize("jump_us", [3_000_000, -3_000_000])
def test_timestamp_jump_marks_a_new_scene(jump_us):
    sync = CameraSynchronizer(offsets_us=OFFSETS, max_gap_s=1.0)
    frames = [f for k in range(3) for f in cycle_frames(k)]
    frames += [f for k in range(3, 6) for f in cycle_frames(k, t0=T0 + jump_us)]
    sets = list(synchronize(frames, sync))
    assert [s.new_scene for s in sets] == [True, False, False, True, False, False]
    assert [s.frame_id for s in sets] == list(range(6))
    # the pose history restarts: no velocity from poses across the jump
    assert sets[3].kinematics.speed == 0.0
    assert sync.stats.new_scenes == 2


def test_new_scene_flushes_the_old_one_and_old_stragglers_are_late():
    sync = CameraSynchronizer(offsets_us=OFFSETS)
    a = cycle_frames(0, scene="a")
    b = cycle_frames(0, scene="b", t0=T0 + 200_000)
    sets, late, _ = feed_all(sync, a[:4] + b)
    assert [(s.scene, s.new_scene, len(s.cameras)) for s in sets] == [("a", True, 4), ("b", True, 6)]
    r = sync.feed(a[4])
    assert r.late == [a[4]]


def test_keyframe_sample_token_is_carried():
    sync = CameraSynchronizer(offsets_us=OFFSETS)
    frames = [frame(c, 0, key=True) for c in CAMERA_CHANNELS] + cycle_frames(1)
    sets = list(synchronize(sorted(frames, key=lambda f: f.timestamp_us), sync))
    assert sets[0].sample_token == "sample0" and sets[0].is_keyframe
    assert sets[1].sample_token is None


def test_random_streams_against_ground_truth_cycles():
    """Property: with jitter, drops, uneven 50/100 ms cycles and bus delays, every set holds frames
    of exactly one true cycle, sets come out in cycle order, and every frame is used once or late."""
    for seed in range(5):
        rng = random.Random(seed)
        t, frames = T0, []
        for k in range(60):
            t += rng.choice([50_000, 100_000, 100_000])
            for c in CAMERA_CHANNELS:
                if rng.random() < 0.1:
                    continue  # dropped on the car
                frames.append(frame(c, k, t0=t - k * PERIOD, jitter=rng.randint(-2_000, 2_000)))
        arrivals = sorted(frames, key=lambda f: f.timestamp_us + rng.expovariate(1 / 5_000))
        sync = CameraSynchronizer(offsets_us=OFFSETS)
        sets, late, rejected = feed_all(sync, arrivals)
        sets += sync.flush().sets
        assert not rejected
        cycles = [{c.frame_id for c in s.cameras} for s in sets]
        assert all(len(c) == 1 for c in cycles), "a set mixes cycles"
        order = [c.pop() for c in cycles]
        assert order == sorted(order) and len(set(order)) == len(order)
        used = sum(len(s.cameras) for s in sets)
        assert used + len(late) == len(frames)
        assert len(late) < 0.05 * len(frames)


def test_cluster_cycles_groups_offline_items():
    items = [(c, T0 + k * 100_000 + OFFSETS[c] + (k % 3) * 500) for k in range(4) for c in CAMERA_CHANNELS]
    random.Random(0).shuffle(items)
    groups = cluster_cycles(items, OFFSETS)
    assert len(groups) == 4
    for g in groups:
        ks = {round((items[i][1] - T0 - OFFSETS[items[i][0]]) / 100_000) for i in g}
        assert len(ks) == 1 and len(g) == 6
    # without the offsets, a 45 ms spread does not fit a 21 ms tolerance: cycles split apart
    assert len(cluster_cycles(items)) > 4


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="unknown camera channels"):
        CameraSynchronizer(channels=("CAM_TOP",))
    with pytest.raises(ValueError, match="tolerance_us"):
        CameraSynchronizer(tolerance_us=PERIOD)
    with pytest.raises(ValueError, match="offsets_us has unknown channels"):
        CameraSynchronizer(offsets_us={"LIDAR_TOP": 0})
    assert math.isclose(CameraSynchronizer().tolerance_us, PERIOD // 4)
