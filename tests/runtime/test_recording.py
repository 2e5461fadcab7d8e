"""The Foxglove recording (runtime/recording.py) read back with the `mcap` reader: every topic present, one
scene message per tick, log times never going backwards on a topic; and the layout in docs/ is the one built."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader

from runtime.foxglove_layout import layout_json
from runtime.recording import Recorder
from schema.messages import CAMERA_CHANNELS, StageTiming
from schema.results import DetectionArrays, DropRecord, Polyline, TickResult
from tests.runtime.fakes import LiveCameraSource, ListSource, make_frame_set

REPO = Path(__file__).resolve().parents[2]


def _result(fs, seg: bool = True) -> TickResult:
    dets = DetectionArrays("ego", np.array([[5, 1, 0.8, 2, 4.5, 1.6, 0.3, 3, 0.5], [9, -3, 0.5, 0.7, 0.7, 1.7, 0, 0, 0]],
                                           np.float32), [0.8, 0.4], [0, 5], ["car", "pedestrian"], track_ids=[3, 7])
    lines = (Polyline("lane_divider", np.array([[0, 2], [20, 2.5]])), Polyline("road_edge", np.array([[0, -4], [15, -4]])))
    labels = np.random.default_rng(fs.frame_id).integers(0, 11, (len(fs.cameras), 6, 10), dtype=np.uint8)
    t = fs.timestamp_us * 1000
    return TickResult(fs.oldest_timestamp_us, fs.ego_to_global,
                      dets, dets.to_global(fs.ego_to_global), lines, tuple(p.to_global(fs.ego_to_global) for p in lines),
                      fs.channels, labels if seg else labels[:0], fs.missing,
                      frame_id=fs.frame_id, scene=fs.scene, timestamp_us=fs.timestamp_us, sample_token=fs.sample_token,
                      timings=(StageTiming("backbone", t, t + 30_000_000), StageTiming("bev", t + 30_000_000, t + 70_000_000)))


def _read(path: Path) -> dict[str, list]:
    """topic -> [(log_time, schema name, decoded JSON or raw bytes)] in file order."""
    out = defaultdict(list)
    with open(path, "rb") as f:
        for schema, channel, message in make_reader(f).iter_messages(log_time_order=False):
            out[channel.topic].append((message.log_time, schema.name if schema else "", message.data))
    return out


def _ground_truth(fs):
    if fs.sample_token is None:
        return None
    return np.array([[10.0, 2.0, 0.9, 2.0, 4.0, 1.5, 0.0, 0.0, 0.0]]), ["car"]


def test_replay_recording_has_every_topic_one_scene_per_tick_and_monotonic_times(tmp_path):
    sets = [make_frame_set(i, new_scene=i == 0, sample_token=f"s{i}" if i % 2 == 0 else None) for i in range(6)]
    rec = Recorder(tmp_path / "run.mcap", ground_truth=_ground_truth).start()
    source = rec.wrap(ListSource(sets))
    assert not source.is_live and source.describe()["n"] == 6  # the wrapped source's own attributes
    ticks = 0
    for fs in source.frame_sets():
        if fs.frame_id == 3:
            rec.result(DropRecord("bad_input", "a test drop", frame_id=fs.frame_id, scene=fs.scene, timestamp_us=fs.timestamp_us))
        else:
            rec.result(_result(fs))
            ticks += 1
    stats = rec.close()
    assert stats["ticks"] == ticks == 5 and stats["drops"] == 1 and stats["images"] == 6 * 6

    topics = _read(tmp_path / "run.mcap")
    expected = {"/tf", "/scene", "/ground_truth", "/timing", "/drops"}
    expected |= {f"/{ch}/{kind}" for ch in CAMERA_CHANNELS for kind in ("image", "calibration", "segmentation")}
    assert set(topics) == expected
    assert len(topics["/scene"]) == ticks  # one scene message per tick
    assert len(topics["/ground_truth"]) == 3  # the keyframes'
    assert len(topics["/timing"]) == 6 and len(topics["/drops"]) == 1
    for topic, messages in topics.items():
        times = [t for t, _, _ in messages]
        assert times == sorted(times), topic
    assert topics["/scene"][0][1] == "foxglove.SceneUpdate"
    assert topics["/CAM_FRONT/image"][0][1] == "foxglove.CompressedImage"
    # on the log's clock: the scene of a tick is stamped with its sensor time
    assert [t for t, _, _ in topics["/scene"]] == [fs.timestamp_us * 1000 for fs in sets if fs.frame_id != 3]
    timing = [json.loads(d) for _, _, d in topics["/timing"]]
    assert timing[1]["stage_ms"] == {"backbone": 30.0, "bev": 40.0} and timing[1]["dropped"] == 0
    assert timing[3]["kind"] == "drop" and timing[3]["dropped_total"] == 1 and timing[5]["dropped_total"] == 1


def test_live_camera_frames_are_recorded_as_they_arrive(tmp_path):
    rec = Recorder(tmp_path / "run.mcap", drop_when_full=True, max_queue=1000).start()
    source = rec.wrap(LiveCameraSource(2, offset_us=1000))
    assert source.is_live and source.period_us == 83_333 and hasattr(source, "camera_frames")
    frames = list(source.camera_frames())
    assert rec.close()["images"] == len(frames) == 12
    topics = _read(tmp_path / "run.mcap")
    assert len(topics["/CAM_BACK/image"]) == 2 and len(topics["/tf"]) == 12


def test_a_recording_failure_is_reported_at_close(tmp_path):
    rec = Recorder(tmp_path / "run.mcap", jpeg_bytes=lambda frame: 1 / 0).start()
    rec.frame_set(make_frame_set(0))
    with pytest.raises(RuntimeError, match="recording"):
        rec.close()


def test_docs_layout_is_the_layout_the_recorder_writes():
    """docs/foxglove-layout.json is generated by `python -m runtime.foxglove_layout > docs/foxglove-layout.json`."""
    shipped = (REPO / "docs" / "foxglove-layout.json").read_text()
    assert shipped.strip() == layout_json()
    content = json.loads(shipped)["content"]
    panels = json.dumps(content)
    assert all(f"/{ch}/image" in panels for ch in CAMERA_CHANNELS)
    assert '"panelType": "ThreeDee"' in panels and '"/timing.latency_ms"' in panels
