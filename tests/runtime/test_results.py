"""TickResult / DropRecord: JSON round trips, ego->global against the devkit's Box, Perfetto trace."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from nuscenes.utils.data_classes import Box
from pyquaternion import Quaternion

from schema.messages import Pose, StageTiming
from runtime.profiling import chrome_trace
from runtime.report import RunReport
from schema.results import DetectionArrays, DropRecord, Polyline, TickResult, record_from_json


def _result(frame_id=3) -> TickResult:
    pose = Pose(np.array([100.0, 50.0, 1.0]), Quaternion(axis=[0, 0, 1], angle=0.7) * Quaternion(axis=[1, 0, 0], angle=0.02))
    ego = DetectionArrays("ego", np.array([[10, -3, 0.5, 2, 4.5, 1.6, 0.3, 5, 1], [-4, 8, 0, 0.6, 0.7, 1.8, -2.0, 0, 1]]),
                          [0.9, 0.4], [0, 5], ["car", "pedestrian"])
    lines = (Polyline("lane_divider", [[0, 0], [10, 1], [20, 3]]),)
    t0 = 1_000_000_000
    return TickResult(4_990_000, pose, ego, ego.to_global(pose), lines,
                      tuple(p.to_global(pose) for p in lines), ("CAM_FRONT", "CAM_BACK"),
                      np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4), ("CAM_FRONT_LEFT",), True,
                      frame_id=frame_id, scene="scene-x", timestamp_us=5_000_000, sample_token="tok",
                      timings=(StageTiming("ingest", t0, t0 + 1_000_000), StageTiming("submit", t0 + 5_000_000, t0 + 6_000_000),
                       StageTiming("backbone", t0 + 6_000_000, t0 + 30_000_000), StageTiming("bev", t0 + 31_000_000, t0 + 60_000_000),
                       StageTiming("deliver", t0 + 60_000_000, t0 + 61_000_000)))


def test_to_global_matches_devkit_box():
    r = _result()
    for b_ego, b_glob in zip(r.detections_ego.boxes, r.detections_global.boxes):
        box = Box(b_ego[:3], b_ego[3:6], Quaternion(axis=[0, 0, 1], angle=float(b_ego[6])), velocity=(b_ego[7], b_ego[8], 0))
        box.rotate(r.ego_to_global.rotation)
        box.translate(r.ego_to_global.translation)
        np.testing.assert_allclose(b_glob[:3], box.center, atol=1e-3)
        np.testing.assert_allclose(b_glob[6], box.orientation.yaw_pitch_roll[0], atol=1e-4)
        np.testing.assert_allclose(b_glob[7:9], box.velocity[:2], atol=1e-4)


def test_to_global_yaw_is_the_devkits_quaternion_yaw_for_tilted_poses():
    from nuscenes.eval.common.utils import quaternion_yaw

    rng = np.random.default_rng(0)
    for _ in range(20):
        rot = Quaternion(axis=[0, 0, 1], angle=rng.uniform(-np.pi, np.pi)) * Quaternion(axis=rng.normal(size=3), angle=rng.uniform(-0.1, 0.1))
        pose = Pose(rng.normal(size=3) * 100, rot)
        boxes = np.zeros((50, 9))
        boxes[:, 6] = rng.uniform(-np.pi, np.pi, 50)
        glob = DetectionArrays("ego", boxes, np.ones(50), np.zeros(50, int), ["car"] * 50).to_global(pose)
        expect = [quaternion_yaw(rot * Quaternion(axis=[0, 0, 1], angle=y)) for y in boxes[:, 6]]  # heading of the box's x axis
        d = np.angle(np.exp(1j * (glob.boxes[:, 6].astype(np.float64) - expect)))  # wrapped difference
        np.testing.assert_allclose(d, 0.0, atol=1e-6)


def test_json_round_trip():
    r = _result()
    back = record_from_json(json.loads(json.dumps(r.to_json(include_seg=True))))
    assert isinstance(back, TickResult)
    assert (back.frame_id, back.scene, back.sample_token, back.missing, back.timings) == (
        r.frame_id, r.scene, r.sample_token, r.missing, r.timings)
    np.testing.assert_allclose(back.detections_global.boxes, r.detections_global.boxes, atol=1e-3)
    assert back.detections_ego.names == r.detections_ego.names
    np.testing.assert_array_equal(back.seg, r.seg)
    np.testing.assert_allclose(back.polylines_global[0].points, r.polylines_global[0].points, atol=1e-2)
    d = DropRecord("overload", "full", ("CAM_BACK",), frame_id=7, scene="scene-x", timestamp_us=123,
                   timings=(StageTiming("ingest", 1, 2),))
    assert record_from_json(json.loads(json.dumps(d.to_json()))) == d
    with pytest.raises(ValueError, match="unknown reason"):
        DropRecord("tired", frame_id=1, scene="s", timestamp_us=1)


def test_latency_excludes_backpressure_wait_and_report_percentiles():
    r = _result()
    assert r.latency_ms == pytest.approx(1.0 + 56.0)  # ingest 1 ms + submit->deliver 56 ms (the 4 ms wait excluded)
    rep = RunReport(live=False)
    for i in range(10):
        rep.add(_result(i))
    rep.add(DropRecord("bad_input", frame_id=99, scene="s", timestamp_us=1))
    s = rep.summary()
    assert s["ticks"] == 10 and s["drops_by_reason"] == {"bad_input": 1} and s["frame_sets"] == 11
    assert s["stage_ms"]["backbone"]["p50"] == pytest.approx(24.0)


def test_chrome_trace_has_a_slice_per_stage_and_drop_events():
    recs = [_result(1), DropRecord("overload", frame_id=2, scene="s", timestamp_us=1,
                                       timings=(StageTiming("ingest", 1_000_000_000, 1_000_000_100),))]
    trace = chrome_trace(recs)
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(slices) == 7 and all(e["dur"] >= 0 for e in slices)  # 5 stages + end to end + the drop's ingest
    bev = next(e for e in slices if e["args"]["frame_id"] == 1 and e["cat"] == "bev")
    assert bev["dur"] == pytest.approx(29_000.0)  # microseconds
    assert any(e["ph"] == "i" and "overload" in e["name"] for e in trace["traceEvents"])
    names = {e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "thread_name"}
    assert {"backbone", "bev", "drops"} <= names


def test_detection_attributes_travel_with_the_boxes():
    """Attributes the runtime named (by its weights' thresholds) survive to_global and the JSON round trip;
    without them, and in ticks.jsonl lines written before them, they are named by the default thresholds."""
    r = _result()
    assert r.detections_ego.attributes == ("vehicle.moving", "pedestrian.moving")  # 5.1 and 1.0 m/s > 0.2 m/s
    named = DetectionArrays("ego", r.detections_ego.boxes, [0.9, 0.4], [0, 5], ["car", "pedestrian"],
                            ["vehicle.parked", "pedestrian.standing"])
    assert named.to_global(r.ego_to_global).attributes == named.attributes
    assert DetectionArrays.from_json(json.loads(json.dumps(named.to_json()))).attributes == named.attributes
    old_line = {k: v for k, v in named.to_json().items() if k != "attributes"}
    assert DetectionArrays.from_json(old_line).attributes == r.detections_ego.attributes
    with pytest.raises(ValueError, match="attributes 1 differ"):
        DetectionArrays("ego", r.detections_ego.boxes, [0.9, 0.4], [0, 5], ["car", "pedestrian"], ["vehicle.parked"])


def test_track_ids_travel_with_the_boxes():
    """A tracker's ids survive to_global and the JSON round trip; without a tracker (and in older lines) None."""
    r = _result()
    ego = r.detections_ego
    tracked = DetectionArrays("ego", ego.boxes, ego.scores, ego.labels, ego.names, track_ids=[7, 3])
    assert tracked.to_global(r.ego_to_global).track_ids.tolist() == [7, 3]
    assert DetectionArrays.from_json(json.loads(json.dumps(tracked.to_json()))).track_ids.tolist() == [7, 3]
    assert ego.track_ids is None and DetectionArrays.from_json(json.loads(json.dumps(ego.to_json()))).track_ids is None
    old_line = {k: v for k, v in tracked.to_json().items() if k != "track_ids"}
    assert DetectionArrays.from_json(old_line).track_ids is None
    with pytest.raises(ValueError, match="track_ids 1 differ"):
        DetectionArrays("ego", ego.boxes, ego.scores, ego.labels, ego.names, track_ids=[1])


def test_sink_writes_the_attributes_the_runtime_named():
    from replay.nuscenes.submission import submission_boxes

    r = _result()
    glob = DetectionArrays("global", r.detections_global.boxes, [0.9, 0.4], [0, 5], ["car", "pedestrian"],
                           ["vehicle.parked", "pedestrian.standing"])
    boxes = submission_boxes(r.sample_token, glob)
    assert [b["attribute_name"] for b in boxes] == ["vehicle.parked", "pedestrian.standing"]


def test_sink_writes_the_tracks_beside_the_detections(tmp_path):
    """With track ids the run leaves results_tracking.json: the same keyframe boxes of the tracking classes,
    best first, with their ids, and every sample of results_nusc.json; without a tracker, no such file."""
    from schema.classes import DETECTION_NAMES
    from replay.nuscenes.submission import ids_by_score, submission_boxes, tracking_entries
    from runtime.sink import ResultSink

    r = _result()
    names = ["car", "traffic_cone", "pedestrian"]
    glob = DetectionArrays("global", np.concatenate([r.detections_global.boxes, r.detections_global.boxes[:1]]),
                           [0.4, 0.95, 0.9], [DETECTION_NAMES.index(n) for n in names], names, track_ids=[7, 8, 3])
    tracked = replace(r, detections_global=glob)
    boxes = tracking_entries(submission_boxes(tracked.sample_token, glob), ids_by_score(glob.scores, glob.track_ids))
    assert [(b["tracking_name"], b["tracking_id"]) for b in boxes] == [("pedestrian", "3"), ("car", "7")]  # no cone
    by_name = {b["detection_name"]: b for b in submission_boxes(tracked.sample_token, glob)}
    for b in boxes:
        assert b["translation"] == by_name[b["tracking_name"]]["translation"]
        assert b["tracking_score"] == by_name[b["tracking_name"]]["detection_score"]

    sink = ResultSink(tmp_path / "run", expected_samples=["tok", "other"])
    sink.write(tracked)
    paths = sink.close()
    tracks = json.loads((tmp_path / "run" / "results_tracking.json").read_text())["results"]
    assert paths["results_tracking"].endswith("results_tracking.json")
    assert tracks == {"tok": boxes, "other": []}
    plain = ResultSink(tmp_path / "run", expected_samples=["tok"])  # the same directory, a run without a tracker
    plain.write(r)
    assert "results_tracking" not in plain.close() and not (tmp_path / "run" / "results_tracking.json").exists()


def test_sink_saves_each_ticks_segmentation_labels_losslessly(tmp_path):
    """output.save_seg: the sink writes each tick's (Ncam, h, w) label maps as RUN/seg/FRAME.png, and a tick read
    back from ticks.jsonl gets exactly those labels (lab/video.py overlays them); without it, no seg folder."""
    from runtime.sink import SEG_DIR, ResultSink, read_seg
    from schema.results import record_from_json

    r = replace(_result(3), seg=np.random.default_rng(0).integers(0, 11, (2, 44, 80), dtype=np.uint8))
    sink = ResultSink(tmp_path / "run", save_seg=True)
    sink.write(r)
    sink.write(DropRecord("overload", frame_id=4, scene="scene-x", timestamp_us=1))
    sink.close()
    lines = (tmp_path / "run" / "ticks.jsonl").read_text().splitlines()
    back = record_from_json(json.loads(lines[0]))
    assert back.seg.size == 0  # ticks.jsonl holds the shape, not the labels
    back = read_seg(tmp_path / "run" / SEG_DIR, back)
    assert back.seg.dtype == np.uint8 and np.array_equal(back.seg, r.seg)
    assert sorted(p.name for p in (tmp_path / "run" / SEG_DIR).iterdir()) == ["00000003.png"]  # drops have none
    ResultSink(tmp_path / "plain").close()
    assert not (tmp_path / "plain" / SEG_DIR).exists()
