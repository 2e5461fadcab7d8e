"""Streaming evaluation (lab.streaming): which tick each sample is scored with, the clock mapping, velocity
compensation, and a run directory's results_streaming.json read by the devkit's own loader."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lab.streaming import (DeliveredTick, SampleTime, age_summary, compensated, delivered_ticks, newest_delivered,
                           streaming_results, write_streaming)
from schema.messages import Pose, StageTiming
from schema.results import DetectionArrays, DropRecord, TickResult


def _dets(boxes) -> DetectionArrays:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 9)
    n = len(boxes)
    return DetectionArrays("global", boxes, np.linspace(0.9, 0.5, n), np.zeros(n), ("car",) * n)


def _tick(scene: str, frame_id: int, timestamp_us: int, delivered_us: float, boxes=()) -> DeliveredTick:
    return DeliveredTick(scene, frame_id, timestamp_us, delivered_us, _dets(boxes))


def _slow_newest(samples, ticks):
    """The rule read literally: of the sample's scene, the ticks delivered at or before its time; the one with the
    latest input time (then highest frame id); None if there is none."""
    out = {}
    for s in samples:
        done = [t for t in ticks if t.scene == s.scene and t.delivered_us <= s.timestamp_us]
        out[s.token] = max(done, key=lambda t: (t.timestamp_us, t.frame_id)) if done else None
    return out


@pytest.mark.parametrize("seed", range(20))
def test_newest_delivered_matches_the_slow_rule_on_random_runs(seed):
    rng = np.random.default_rng(seed)
    ticks, samples = [], []
    for scene in ("scene-a", "scene-b"):
        n = int(rng.integers(0, 30))
        inputs = np.sort(rng.integers(0, 40, n)) * 1000  # repeated input times happen
        latency = rng.integers(0, 6, n) * 1000  # out-of-order deliveries and equal delivery times happen
        ticks += [_tick(scene, len(ticks) + i, int(t), float(t + d)) for i, (t, d) in enumerate(zip(inputs, latency))]
        # sample times on the same 1 ms grid: some equal a delivery time, some come before the first
        samples += [SampleTime(f"{scene}-{i}", scene, int(t) * 1000) for i, t in enumerate(rng.integers(0, 50, 25))]
    got = newest_delivered(samples, ticks)
    want = _slow_newest(samples, ticks)
    assert list(got) == [s.token for s in samples]
    assert {k: None if v is None else v.frame_id for k, v in got.items()} == \
           {k: None if v is None else v.frame_id for k, v in want.items()}


def test_newest_delivered_edges():
    ticks = [_tick("s", 0, 0, 150.0), _tick("s", 1, 100, 260.0), _tick("s", 2, 200, 240.0), _tick("t", 3, 0, 10.0)]
    samples = [SampleTime("early", "s", 149), SampleTime("tie", "s", 150), SampleTime("mid", "s", 245),
               SampleTime("late", "s", 1000), SampleTime("other", "t", 5)]
    got = {k: None if v is None else v.frame_id for k, v in newest_delivered(samples, ticks).items()}
    # before the first delivery: nothing; delivered exactly at the sample's time: counts; tick 2 (input 200) was
    # delivered before tick 1 (input 100) and stays the newest after tick 1 arrives; scenes never mix
    assert got == {"early": None, "tie": 0, "mid": 2, "late": 2, "other": None}


def _tick_result(scene: str, frame_id: int, timestamp_us: int, end_ns: int, sample_token=None, boxes=()) -> TickResult:
    dets = _dets(boxes)
    ego = DetectionArrays("ego", dets.boxes, dets.scores, dets.labels, dets.names)
    return TickResult(timestamp_us, Pose.identity(), ego, dets, (), (), (), np.zeros((0, 2, 2), np.uint8), (),
                      frame_id=frame_id, scene=scene, timestamp_us=timestamp_us, sample_token=sample_token,
                      timings=(StageTiming("bev", end_ns - 5_000_000, end_ns - 1_000_000),
                               StageTiming("deliver", end_ns - 1_000_000, end_ns)))


def test_delivered_ticks_map_the_wall_clock_onto_the_log_per_scene():
    clock = [{"scene": "s", "log_us": 1_000_000, "wall_ns": 5_000_000_000, "speed": 1.0},
             {"scene": "t", "log_us": 9_000_000, "wall_ns": 8_000_000_000, "speed": 2.0}]
    records = [_tick_result("s", 0, 1_000_000, 5_120_000_000),  # delivered 120 ms after the scene's start
               DropRecord("error", frame_id=1, scene="s", timestamp_us=1_083_333),
               _tick_result("t", 2, 9_000_000, 8_100_000_000)]  # 100 ms of wall at 2x: 200 ms of log
    got = delivered_ticks(records, clock)
    assert [(t.frame_id, t.delivered_us) for t in got] == [(0, 1_120_000.0), (2, 9_200_000.0)]
    with pytest.raises(ValueError, match="no clock anchor"):
        delivered_ticks([_tick_result("u", 3, 0, 1)], clock)
    with pytest.raises(ValueError, match="speed"):
        delivered_ticks([], [{"scene": "s", "log_us": 0, "wall_ns": 0, "speed": 0}])


def test_velocity_compensation_moves_each_centre_by_velocity_times_age():
    boxes = [[10.0, -4.0, 1.0, 2.0, 4.5, 1.6, 0.3, 5.0, -2.0], [0.0, 0.0, 0.5, 0.6, 0.6, 1.8, 1.0, 0.0, 0.0]]
    moved = compensated(_dets(boxes), 0.25)
    want = np.asarray(boxes, np.float64)
    want[:, 0:2] += want[:, 7:9] * 0.25
    np.testing.assert_array_equal(moved.boxes, want.astype(np.float32))
    assert moved.names == ("car", "car") and np.array_equal(moved.scores, _dets(boxes).scores)

    # through the protocol: the age is the sample's time minus the tick's input time (here 200 ms)
    ticks = [_tick("s", 7, 1_000_000, 1_100_000.0, boxes)]
    samples = [SampleTime("a", "s", 1_200_000), SampleTime("b", "s", 1_050_000)]
    plain, used = streaming_results(samples, ticks)
    velo, _ = streaming_results(samples, ticks, "velocity")
    assert used == {"a": {"frame_id": 7, "timestamp_us": 1_000_000, "age_ms": 200.0}, "b": None}
    assert plain["b"] == velo["b"] == []
    best = np.asarray(boxes[0])  # the first box scores highest: written first
    assert plain["a"][0]["translation"] == pytest.approx(best[0:3].tolist(), abs=1e-5)
    assert velo["a"][0]["translation"] == pytest.approx([10.0 + 5.0 * 0.2, -4.0 - 2.0 * 0.2, 1.0], abs=1e-5)
    assert velo["a"][0]["velocity"] == plain["a"][0]["velocity"]
    assert age_summary(used)["empty_samples"] == 1 and age_summary(used)["age_ms"]["p50"] == 200.0
    with pytest.raises(ValueError, match="unknown compensation"):
        streaming_results(samples, ticks, "acceleration")


def test_a_run_directory_gives_a_submission_the_devkit_loads(sim_nusc, tmp_path):
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox

    from replay.nuscenes.submission import write_submission

    scene = sim_nusc.scene[0]
    samples = sim_nusc.field2token("sample", "scene_token", scene["token"])
    times = [sim_nusc.get("sample", t)["timestamp"] for t in samples]
    t0, wall0 = times[0], 7_000_000_000_000
    box = [600.0, 1600.0, 1.0, 2.0, 4.5, 1.6, 0.0, 3.0, 0.0]
    # each keyframe's tick is delivered 300 ms after its input (log and wall in step)
    with open(tmp_path / "ticks.jsonl", "w") as f:
        for i, (token, t) in enumerate(zip(samples, times)):
            f.write(json.dumps(_tick_result(scene["name"], i, t, wall0 + (t - t0 + 300_000) * 1000, token, [box]).to_json()) + "\n")
    clock = [{"scene": scene["name"], "log_us": t0, "wall_ns": wall0, "speed": 1.0}]
    (tmp_path / "summary.json").write_text(json.dumps({"source_stats": {"clock": clock}}))
    write_submission(tmp_path / "results_nusc.json", {t: [] for t in samples})

    record = write_streaming(tmp_path, sim_nusc, "velocity")
    boxes, meta = load_prediction(str(tmp_path / "results_streaming.json"), 500, DetectionBox)
    assert set(boxes.sample_tokens) == set(samples) and meta["use_camera"]
    assert record["empty_samples"] == 1  # the first keyframe: nothing delivered yet (2 Hz keyframes: 500 ms apart)
    ages = [u["age_ms"] for u in json.loads((tmp_path / "streaming.json").read_text())["used"].values() if u]
    assert ages == pytest.approx([(b - a) / 1e3 for a, b in zip(times, times[1:])])  # the previous keyframe's tick
    second = boxes[samples[1]][0]
    assert second.translation[0] == pytest.approx(600.0 + 3.0 * (times[1] - times[0]) / 1e6, abs=1e-3)
