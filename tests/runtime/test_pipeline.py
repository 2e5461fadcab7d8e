"""Pipeline mechanics with a small injected model: accounting, backpressure, drops, restarts, sink."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from pyquaternion import Quaternion

from runtime.api import Runtime
from schema.messages import Pose
from schema.results import DropRecord, TickResult
from tests.runtime.conftest import small_config
from tests.runtime.fakes import CountingModel, ListSource, LiveCameraSource, LiveFakeSource, make_frame_set


def _account(records, frame_ids):
    """Every frame set that entered ends as exactly one record."""
    got = sorted(r.frame_id for r in records)
    assert got == sorted(frame_ids), f"records {got} != frame sets {sorted(frame_ids)}"


def _bad_sets():
    nan_pose = replace(make_frame_set(3), ego_to_global=Pose(np.array([np.nan, 0, 0]), Quaternion()))
    fs = make_frame_set(4)
    cam = fs.cameras[0]
    wrong_dtype = replace(fs, cameras=(replace(cam, image=cam.image.astype(np.float32)),) + fs.cameras[1:])
    fs = make_frame_set(5)
    wrong_shape = replace(fs, cameras=(replace(fs.cameras[0], image=fs.cameras[0].image[..., :2]),) + fs.cameras[1:])
    fs = make_frame_set(6)
    unknown = replace(fs, cameras=fs.cameras[:-1] + (replace(fs.cameras[-1], channel="CAM_ROOF"),))
    no_cams = make_frame_set(7, missing=tuple(c.channel for c in fs.cameras))
    return [nan_pose, wrong_dtype, wrong_shape, unknown, no_cams]


def test_replay_accounts_bad_input_and_keeps_going(ray_session, counting_factory):
    sets = [make_frame_set(0, new_scene=True), make_frame_set(1), make_frame_set(2, missing=("CAM_BACK",))]
    sets += _bad_sets()
    sets += [make_frame_set(8), make_frame_set(9, scene="scene-b", new_scene=True), make_frame_set(10, scene="scene-b")]
    with Runtime(small_config(), model_factory=counting_factory) as rt:
        records = list(rt.iterate(ListSource(sets)))
    _account(records, [s.frame_id for s in sets])
    drops = {r.frame_id: r for r in records if isinstance(r, DropRecord)}
    assert {k: v.reason for k, v in drops.items()} == {
        3: "bad_input", 4: "bad_input", 5: "bad_input", 6: "bad_input", 7: "late_camera"}
    assert "not finite" in drops[3].detail and "dtype" in drops[4].detail and "shape" in drops[5].detail
    assert "CAM_ROOF" in drops[6].detail
    ticks = {r.frame_id: r for r in records if isinstance(r, TickResult)}
    # State: counts ticks since the last reset; bad sets never reach the model; scene-b resets it.
    counts = {k: int(round(v.detections_ego.boxes[0, 0])) for k, v in ticks.items()}
    assert counts == {0: 1, 1: 2, 2: 3, 8: 4, 9: 1, 10: 2}
    assert ticks[2].degraded and ticks[2].missing == ("CAM_BACK",) and len(ticks[2].seg_channels) == 5
    assert ticks[2].seg.shape[0] == 5
    stages = [t.stage for t in ticks[1].timings]
    assert stages == ["put", "ingest", "submit", "backbone", "bev", "deliver"]
    # Global boxes follow the ego pose (yaw 0.1 rad, ego at x = frame_id).
    g = ticks[8].detections_global.boxes[0]
    np.testing.assert_allclose(g[:2], [8 + 4 * np.cos(0.1), 2 + 4 * np.sin(0.1)], atol=1e-4)
    np.testing.assert_allclose(g[6], 0.1, atol=1e-5)


def test_replay_blocks_when_full_and_loses_nothing(ray_session):
    import functools

    factory = functools.partial(CountingModel, step_sleep_s=0.05)
    sets = [make_frame_set(i, new_scene=(i == 0)) for i in range(10)]
    with Runtime(small_config(max_in_flight=2), model_factory=factory) as rt:
        records = list(rt.iterate(ListSource(sets)))
        assert rt.report.extra["max_in_flight_seen"] <= 2
    assert all(isinstance(r, TickResult) for r in records)
    assert [r.frame_id for r in records] == list(range(10))
    assert [int(r.detections_ego.boxes[0, 0]) for r in records] == list(range(1, 11))


def test_live_overload_drops_oldest_waiting_work(ray_session):
    import functools

    # ~4 ticks/s of capacity against 24 Hz of input: most sets must be dropped, and said so.
    factory = functools.partial(CountingModel, step_sleep_s=0.25)
    with Runtime(small_config(max_in_flight=1, live_queue=1), model_factory=factory) as rt:
        records = list(rt.iterate(LiveFakeSource(24, rate_hz=24.0)))
    _account(records, range(24))
    drops = [r for r in records if isinstance(r, DropRecord)]
    ticks = [r for r in records if isinstance(r, TickResult)]
    assert drops and all(d.reason == "overload" for d in drops)
    assert len(ticks) >= 2
    # Drop-oldest: the newest set is never the one dropped, and the last set always runs.
    assert ticks[-1].frame_id == 23
    # Drops are emitted in frame order (always the oldest waiting one goes).
    assert [d.frame_id for d in drops] == sorted(d.frame_id for d in drops)


def test_live_per_camera_overload_sheds_before_encoding(ray_session):
    """Live, cameras encoded as they arrive, a BEV stage far slower than the 12 Hz input: most sets
    are dropped ('overload'), every set ends as exactly one record, the newest set still runs, and
    the backbone encoded exactly the cameras of the sets that became results (admission is decided
    at a set's first camera, so a dropped set costs no backbone work)."""
    import functools

    import ray

    factory = functools.partial(CountingModel, step_sleep_s=0.25)
    with Runtime(small_config(live_encode="camera", max_in_flight=2, live_queue=1), model_factory=factory) as rt:
        records = list(rt.iterate(LiveCameraSource(24)))
        encoded = ray.get(rt.supervisor.backbone.cameras_encoded.remote())
    _account(records, range(24))
    drops = [r for r in records if isinstance(r, DropRecord)]
    ticks = [r for r in records if isinstance(r, TickResult)]
    assert len(drops) >= 8 and all(d.reason == "overload" for d in drops), [(d.reason, d.detail) for d in drops]
    assert ticks and max(t.frame_id for t in ticks) == 23  # drop-oldest: the last set runs
    assert encoded == sum(len(t.seg_channels) for t in ticks)  # no camera of a dropped set was encoded
    assert [int(t.detections_ego.boxes[0, 0]) for t in sorted(ticks, key=lambda t: t.frame_id)] == list(
        range(1, len(ticks) + 1))  # the temporal state saw the admitted sets in order


def test_sink_writes_run_directory(ray_session, counting_factory, tmp_path):
    sets = [make_frame_set(0, new_scene=True, sample_token="s0"), make_frame_set(1),
            _bad_sets()[0], make_frame_set(2, sample_token="s2")]
    sets[2] = replace(sets[2], frame_id=5, sample_token="s5")
    with Runtime(small_config(), model_factory=counting_factory) as rt:
        records = list(rt.iterate(ListSource(sets), out_dir=tmp_path, expected_samples=["s0", "s2", "s5", "s9"]))
    assert len(records) == 4
    lines = [json.loads(x) for x in (tmp_path / "ticks.jsonl").read_text().splitlines()]
    assert sorted(x["frame_id"] for x in lines) == [0, 1, 2, 5]
    assert {x["kind"] for x in lines} == {"tick", "drop"}
    sub = json.loads((tmp_path / "results_nusc.json").read_text())
    assert set(sub["results"]) == {"s0", "s2", "s5", "s9"}
    assert sub["results"]["s5"] == [] and sub["results"]["s9"] == []
    box = sub["results"]["s0"][0]
    assert box["sample_token"] == "s0" and box["detection_name"] == "car" and len(box["rotation"]) == 4
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ticks"] == 3 and summary["drops_by_reason"] == {"bad_input": 1}
    assert set(summary["placement"]) >= {"backbone", "bev"}


@pytest.mark.asyncio
async def test_async_stream_api(ray_session, counting_factory):
    sets = [make_frame_set(i, new_scene=(i == 0)) for i in range(5)]
    rt = Runtime(small_config(), model_factory=counting_factory)
    try:
        out = [r async for r in rt.stream(ListSource(sets))]
    finally:
        rt.close()
    assert [r.frame_id for r in out] == list(range(5))
    assert all(isinstance(r, TickResult) and r.valid for r in out)


def test_live_per_camera_encoding_gives_the_set_at_once_results(ray_session, counting_factory):
    """pipeline.live_encode 'camera' (backbone per camera as it arrives) against 'set': the same
    records for the same frames, a degraded set included, and each camera's backbone timing kept."""
    drop = {3: ("CAM_BACK",), 5: ("CAM_BACK_LEFT",)}
    out = {}
    for mode in ("camera", "set"):
        with Runtime(small_config(live_encode=mode, max_in_flight=2, live_queue=4), model_factory=counting_factory) as rt:
            out[mode] = list(rt.iterate(LiveCameraSource(8, drop=drop)))
        _account(out[mode], range(8))
        assert all(isinstance(r, TickResult) for r in out[mode]), [getattr(r, "detail", "") for r in out[mode]]
    cam, whole = out["camera"], out["set"]
    for a, b in zip(cam, whole):
        assert a.frame_id == b.frame_id and a.missing == b.missing and a.seg_channels == b.seg_channels
        np.testing.assert_array_equal(a.detections_ego.boxes, b.detections_ego.boxes)
        np.testing.assert_array_equal(a.seg, b.seg)
        per_cam = [t for t in a.timings if t.stage == "backbone_camera"]
        assert len(per_cam) == len(a.seg_channels)
        assert not any(t.stage == "backbone_camera" for t in b.timings)
    assert cam[3].missing == ("CAM_BACK",) and cam[5].missing == ("CAM_BACK_LEFT",)


def test_replay_releases_a_tick_just_in_time_for_a_slower_bev_stage(ray_session):
    """Replay with a BEV stage slower than the backbone: the next tick goes to the backbone when its
    features will meet a free BEV actor, so it does not wait inside the BEV actor (latency without
    throughput); the BEV actor is still never idle between ticks for long."""
    import functools

    factory = functools.partial(CountingModel, encode_sleep_s=0.02, step_sleep_s=0.15)
    sets = [make_frame_set(i, new_scene=(i == 0)) for i in range(10)]
    with Runtime(small_config(max_in_flight=2), model_factory=factory) as rt:
        records = list(rt.iterate(ListSource(sets)))
    assert [r.frame_id for r in records] == list(range(10)) and all(isinstance(r, TickResult) for r in records)
    waits, gaps = [], []
    for prev, r in zip(records[3:], records[4:]):
        by = {t.stage: t for t in r.timings}
        waits.append((by["bev"].start_ns - by["backbone"].end_ns) / 1e9)  # features ready -> BEV starts
        gaps.append((by["bev"].start_ns - next(t.end_ns for t in prev.timings if t.stage == "bev")) / 1e9)
    assert sorted(waits)[len(waits) // 2] < 0.06  # without the release it is ~0.13 s (0.15 - 0.02)
    assert sorted(gaps)[len(gaps) // 2] < 0.06  # and the BEV actor is kept busy


class _DecodingSource(ListSource):
    """A replay source that takes a decode-size hint (as NuScenesSource.decode_for) and records it."""

    def __init__(self, sets):
        super().__init__(sets)
        self.hints, self.workers = [], None

    def decode_for(self, needed_size, workers=1):
        self.hints.append(needed_size)
        self.workers = self.workers if needed_size is None else workers


class _DeferringSource(_DecodingSource):
    """As _DecodingSource, and it can leave its JPEGs for the backbone stage to decode (decode_for's `defer`)."""

    def __init__(self, sets):
        super().__init__(sets)
        self.defers = []

    def decode_for(self, needed_size, workers=1, defer=False):
        super().decode_for(needed_size, workers)
        self.defers.append(defer)


@pytest.mark.parametrize("replay_decode", ["backbone", "driver"])
def test_replay_decode_asks_a_source_that_can_to_leave_its_jpegs_encoded(ray_session, counting_factory, replay_decode):
    """pipeline.replay_decode: backbone hands decoding to the backbone stage where the source can defer it
    (a source whose decode_for has no `defer` keeps decoding itself: the test above)."""
    from perception.rectify import RectifyConfig
    from runtime.prescale import Prescaler

    src = _DeferringSource([make_frame_set(i) for i in range(2)])
    cfg = small_config(scaled_decode=True)
    cfg = cfg.model_copy(update={"pipeline": cfg.pipeline.model_copy(update={"replay_decode": replay_decode})})
    with Runtime(cfg, model_factory=counting_factory) as rt:
        rt.supervisor.prescaler = Prescaler(RectifyConfig())
        records = list(rt.iterate(src))
        assert src.hints[0] == rt.supervisor.prescaler.needed_size
    _account(records, [0, 1])
    assert src.defers == [replay_decode == "backbone", False]  # for the stream, then undone with the hint

@pytest.mark.parametrize("scaled", [True, False])
def test_replay_tells_the_source_the_size_the_rectifier_needs(ray_session, counting_factory, scaled):
    from perception.rectify import RectifyConfig
    from runtime.prescale import Prescaler

    src = _DecodingSource([make_frame_set(i) for i in range(3)])
    with Runtime(small_config(scaled_decode=scaled), model_factory=counting_factory) as rt:
        rt.supervisor.prescaler = Prescaler(RectifyConfig())  # CountingModel has no rectifier of its own
        records = list(rt.iterate(src))
    _account(records, [0, 1, 2])
    if scaled:
        assert src.hints[0] == rt.supervisor.prescaler.needed_size and src.hints[-1] is None, "set for the stream, undone after"
        assert src.workers == rt.cfg.pipeline.ingest_threads
    else:
        assert src.hints == []


@pytest.mark.parametrize("read_ahead", [0, 1])
def test_replay_read_ahead_loads_sets_only_as_far_ahead_as_allowed(ray_session, read_ahead):
    """read_ahead 0: a set is loaded when a slot frees (its load never overlaps the previous tick);
    read_ahead 1: the next set loads while the actors work."""
    import functools

    factory = functools.partial(CountingModel, step_sleep_s=0.1)
    with Runtime(small_config(max_in_flight=1, read_ahead=read_ahead), model_factory=factory) as rt:
        records = list(rt.iterate(ListSource([make_frame_set(i) for i in range(5)])))
    _account(records, range(5))
    ticks = sorted(records, key=lambda r: r.frame_id)

    def t(r, stage, end):
        return next((x.end_ns if end else x.start_ns) for x in r.timings if x.stage == stage)

    overlaps = [t(b, "ingest", False) < t(a, "bev", True) for a, b in zip(ticks, ticks[1:])]
    assert overlaps == [bool(read_ahead)] * 4


def test_a_consumer_that_stops_early_leaves_no_pending_task(ray_session, counting_factory, caplog):
    """Breaking out of `iterate` runs the stream's cleanup and settles its tasks: asyncio reports no
    'Task was destroyed but it is pending' (it did, once per early stop), and the runtime streams again."""
    import gc
    import logging

    sets = [make_frame_set(i, new_scene=i == 0) for i in range(6)]
    with Runtime(small_config(), model_factory=counting_factory) as rt, caplog.at_level(logging.ERROR, logger="asyncio"):
        for record in rt.iterate(ListSource(sets)):
            if record.frame_id == 1:
                break
        gc.collect()
        again = list(rt.iterate(ListSource([make_frame_set(10, new_scene=True)])))
    assert not [r for r in caplog.records if "destroyed but it is pending" in r.getMessage()]
    assert [r.frame_id for r in again] == [10] and isinstance(again[0], TickResult)


def test_a_jpeg_that_breaks_in_the_backbone_leaves_its_camera_missing(ray_session, counting_factory, tmp_path):
    """End to end with replay_decode: backbone: a keyframe JPEG whose header reads but whose data is cut short
    passes the driver (it only reads headers) and fails to decode in the backbone stage: that tick runs without
    the camera (missing), and every set still ends as a tick."""
    from perception.rectify import RectifyConfig
    from replay.nuscenes.source import NuScenesSource
    from runtime.prescale import Prescaler
    from tests.replay.nuscenes.test_source import SCENES, make_dataroot

    info = make_dataroot(tmp_path)
    broken = [sd for sd in info["sample_data"] if "__CAM_BACK__" in sd["filename"] and sd["is_key_frame"]][1]
    data = (tmp_path / broken["filename"]).read_bytes()
    (tmp_path / broken["filename"]).write_bytes(data[: data.index(b"\xff\xda") + 20])  # the scan cut short
    src = NuScenesSource(tmp_path, "v1.0-mini", scenes=[SCENES[0]], keyframes_only=True)
    with Runtime(small_config(scaled_decode=True, replay_decode="backbone"), model_factory=counting_factory) as rt:
        rt.supervisor.prescaler = Prescaler(RectifyConfig())  # CountingModel has no rectifier of its own
        records = list(rt.iterate(src))
    ticks = [r for r in records if isinstance(r, TickResult)]
    assert len(ticks) == len(records) == 3  # the scene's keyframes
    hit = next(t for t in ticks if t.sample_token == broken["sample_token"])
    assert hit.missing == ("CAM_BACK",) and "CAM_BACK" not in hit.seg_channels
    assert all(t.missing == () for t in ticks if t is not hit)
    assert all("decode" in [s.stage for s in t.timings] for t in ticks)  # decoded in the stage, not the driver
