"""The --faults SPEC parser, the seeded injector (frames and frame sets) and the JPEG damage it does:
every fault class does what its name says, the same seed injects the same faults, a bad SPEC is one
error naming the problem, and a corrupt or truncated JPEG is refused by the replay's strict decoder
(where Pillow decodes it to garbage)."""
from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from replay.fault_source import FaultyLiveSource, FaultySource, with_faults
from replay.faults import Fault, FaultInjector, FaultSpecError, KillSchedule, parse_faults
from replay.image_damage import corrupt_jpeg, strict_decode, truncate_jpeg
from replay.nuscenes.source import decode_image
from schema.messages import CAMERA_CHANNELS
from tests.runtime.fakes import LiveCameraSource, ListSource, make_frame_set

PERIOD = 83_333


def _sets(n: int, size=(24, 40)):
    return [make_frame_set(i, size=size, new_scene=(i == 0)) for i in range(n)]


def _frames(n: int):
    """Raw frames of n cycles, in firing order, without arrival times (not paced)."""
    out = []
    for fs in _sets(n):
        out += [replace(c, timestamp_us=c.timestamp_us + 6_000 * i) for i, c in enumerate(fs.cameras)]
    return out


def test_parse_every_class():
    spec = ("dead:CAM_BACK@3,missing:cam_front@1-2,late:0.1,duplicate:0.2,reorder:0.3,jump:-5@4,corrupt:0.05,"
            "truncated:0.01,wrong_size:0.02@1-3,nan_pose:0.5,kill:bev@5,overload:2@1-2")
    faults = parse_faults(spec)
    assert [f.name for f in faults] == ["dead", "missing", "late", "duplicate", "reorder", "jump", "corrupt", "truncated",
                                        "wrong_size", "nan_pose", "kill", "overload"]
    assert faults[0] == Fault("dead", "CAM_BACK", 3.0)
    assert faults[1] == Fault("missing", "CAM_FRONT", 1.0, 2.0)
    assert faults[5].arg == -5.0 and faults[10].arg == "bev" and faults[11].arg == 2
    assert faults[8].active(1.5) and not faults[8].active(3.0)


@pytest.mark.parametrize("spec, words", [
    ("", "empty"), ("corrupt:0.1,,dead:CAM_BACK@1", "empty item"), ("melt:0.1", "unknown fault 'melt'"),
    ("corrupt:1.5", "probability 1.5"), ("corrupt:x", "not a number"), ("corrupt", "needs an argument"),
    ("dead:CAM_TOP@1", "unknown camera 'CAM_TOP'"), ("dead:CAM_BACK", "needs a time"), ("missing:CAM_BACK@1", "window"),
    ("missing:CAM_BACK@2-1", "not after"), ("kill:gpu@1", "unknown stage 'gpu'"), ("overload:10@1-2", "2 or 3"),
    ("jump:0@1", "jump of 0"), ("dead:CAM_BACK@1-2", "one time"), ("late:0.1@-1", "negative"),
])
def test_bad_spec_is_one_error_naming_the_problem(spec, words):
    with pytest.raises(FaultSpecError, match=words):
        parse_faults(spec)


def _image(rng, h=90, w=160):
    noise = rng.integers(0, 255, (h, w, 3)).astype(np.uint8)
    return np.clip(np.cumsum(noise, axis=1) // 40, 0, 255).astype(np.uint8)


def test_corrupt_jpeg_decodes_in_pillow_but_the_strict_decoder_refuses_it(tmp_path):
    rng = np.random.default_rng(0)
    pillow_ok = 0
    for i in range(40):
        data = simplejpeg.encode_jpeg(_image(rng, int(rng.integers(24, 120)), int(rng.integers(24, 200))), quality=90)
        bad = corrupt_jpeg(data, rng)
        assert bad[:2] == b"\xff\xd8" and bad[-2:] == b"\xff\xd9" and len(bad) == len(data)  # headers intact
        with pytest.raises(ValueError):
            strict_decode(bad)
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(bad)
        with pytest.raises(ValueError):
            decode_image(path)  # the replay's own decoder
        try:
            Image.open(io.BytesIO(bad)).load()
            pillow_ok += 1
        except OSError:
            pass
        with pytest.raises(ValueError):
            strict_decode(truncate_jpeg(data, rng))
    assert pillow_ok >= 35  # "still decodable" to a lenient decoder


def test_dead_and_missing_cameras_leave_the_sets_as_missing():
    inj = FaultInjector(parse_faults("dead:CAM_BACK@1,missing:CAM_FRONT@0.5-0.8"), seed=1)
    out = list(inj.frame_sets(_sets(24)))
    for fs in out:
        t = (fs.timestamp_us - out[0].timestamp_us) / 1e6
        assert ("CAM_BACK" in fs.missing) == (t >= 1.0 - 1e-9)
        assert ("CAM_FRONT" in fs.missing) == (0.5 - 1e-9 <= t < 0.8 - 1e-9)
        assert set(fs.channels) | set(fs.missing) == set(CAMERA_CHANNELS)
    assert inj.counts["dead:CAM_BACK@1".split(":")[0]] == sum("CAM_BACK" in fs.missing for fs in out)


def test_same_seed_same_faults_and_every_injection_logged():
    spec = "corrupt:0.1,nan_pose:0.1,wrong_size:0.1,duplicate:0.1,late:0.1,reorder:0.1"
    logs = []
    for seed in (7, 7, 8):
        inj = FaultInjector(parse_faults(spec), seed=seed)
        out = list(inj.frame_sets(_sets(30)))
        assert [fs.frame_id for fs in out] == list(range(30))  # renumbered in delivery order
        logs.append([(e["fault"], e.get("frame_id"), e.get("channel")) for e in inj.log])
        assert sum(inj.counts.values()) == len(inj.log) > 0
        assert all(e["outcome"] == "rejected by the strict decoder" for e in inj.log if e["fault"].startswith("corrupt"))
    assert logs[0] == logs[1] and logs[0] != logs[2]


def test_frame_set_faults_show_in_the_sets():
    inj = FaultInjector(parse_faults("duplicate:1"), seed=0)
    fs = next(inj.frame_sets(_sets(1)))
    assert len(fs.cameras) == 12  # each camera twice: the runtime's input check refuses the set
    inj = FaultInjector(parse_faults("nan_pose:1"), seed=0)
    fs = next(inj.frame_sets(_sets(1)))
    assert not fs.ego_to_global.is_finite() or not all(c.sensor_to_ego.is_finite() for c in fs.cameras)
    inj = FaultInjector(parse_faults("wrong_size:1"), seed=0)
    fs = next(inj.frame_sets(_sets(1)))
    assert all(c.image.shape[:2] != (24, 40) for c in fs.cameras)
    inj = FaultInjector(parse_faults("jump:-3@0.45"), seed=0)
    ts = [fs.timestamp_us for fs in inj.frame_sets(_sets(12))]
    assert ts[6] - ts[5] == PERIOD - 3_000_000 and all(b - a == PERIOD for a, b in zip(ts[6:], ts[7:]))
    inj = FaultInjector(parse_faults("reorder:0.5"), seed=3)
    ts = [fs.timestamp_us for fs in inj.frame_sets(_sets(20))]
    assert sorted(ts) == sorted(s.timestamp_us for s in _sets(20)) and ts != sorted(ts)


def test_overload_copies_sets_in_the_window():
    inj = FaultInjector(parse_faults("overload:3@0.5-1"), seed=0)
    out = list(inj.frame_sets(_sets(24)))
    in_window = sum(0.5 - 1e-9 <= i * PERIOD / 1e6 < 1 - 1e-9 for i in range(24))
    assert len(out) == 24 + 2 * in_window
    assert [fs.frame_id for fs in out] == list(range(len(out)))
    ts = [fs.timestamp_us for fs in out]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)


def test_raw_frames_late_reorder_duplicate_and_overload():
    frames = _frames(12)
    inj = FaultInjector(parse_faults("late:0.2"), seed=0)
    out = list(inj.camera_frames(frames))
    assert len(out) == len(frames) - sum(1 for e in inj.log if out[-1].timestamp_us < e["timestamp_us"] + 2 * PERIOD)
    late = [e for e in inj.log]
    assert late and all(any(o.timestamp_us == e["timestamp_us"] and o.channel == e["channel"] for o in out)
                        for e in late if e["timestamp_us"] + 2 * PERIOD <= frames[-1].timestamp_us)
    inj = FaultInjector(parse_faults("reorder:0.3,duplicate:0.1"), seed=0)
    out = list(inj.camera_frames(frames))
    assert len(out) == len(frames) + inj.counts["duplicate"]
    assert [o.timestamp_us for o in out] != sorted(o.timestamp_us for o in out)
    inj = FaultInjector(parse_faults("overload:2@0.25-0.5"), seed=0)
    out = list(inj.camera_frames(frames))
    assert len(out) == len(frames) + inj.counts["overload"]
    assert inj.counts["overload"] == sum(0.25 - 1e-9 <= (f.timestamp_us - frames[0].timestamp_us) / 1e6 < 0.5 - 1e-9
                                         for f in frames)


def test_kill_schedule_fires_each_kill_once_at_its_stream_time():
    ks = KillSchedule(parse_faults("kill:bev@0.45,kill:backbone@0.95,corrupt:0.1"))
    fired = [(i, f.arg) for i in range(24) for f in ks.due(1_000_000 + i * PERIOD)]
    assert fired == [(6, "bev"), (12, "backbone")]


def test_wrapped_sources_keep_their_kind_and_report_the_faults():
    replay = with_faults(ListSource(_sets(5)), "corrupt:0.5", seed=2)
    assert type(replay) is FaultySource and not replay.is_live and len(replay.sets) == 5
    assert len(list(replay.frame_sets())) == 5 and not hasattr(replay, "camera_frames")
    assert replay.stats.summary()["faults"]["counts"]["corrupt"] > 0
    assert replay.describe()["faults"] == "corrupt:0.5"
    live = with_faults(LiveCameraSource(3), "dead:CAM_BACK@0")
    assert type(live) is FaultyLiveSource and live.is_live and live.period_us == PERIOD
    assert not any(f.channel == "CAM_BACK" for f in live.camera_frames())
