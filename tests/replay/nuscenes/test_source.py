"""Log replay through the devkit: the real scene-0523 (keyframes only on disk) and a tiny synthetic
dataroot with sweeps, two scenes, a corrupt and an absent image."""
from __future__ import annotations

import json
import logging
import math
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from replay.nuscenes.source import NuScenesSource
from schema.source import FrameSource
from schema.messages import CAMERA_CHANNELS, Pose
from schema.results import DropRecord

LOGGER = "replay.nuscenes.source"


# --- the real scene ---------------------------------------------------------------------------------
def test_real_scene_keyframes_replayed_with_sweeps_missing_said_once(real_scene_root, caplog):
    from nuscenes.nuscenes import NuScenes

    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = NuScenesSource(real_scene_root, "v1.0-trainval")
    assert isinstance(src, FrameSource) and not src.is_live
    nusc = NuScenes("v1.0-trainval", str(real_scene_root), verbose=False)  # independent reference
    scene = nusc.scene[0]
    samples, tok = [], scene["first_sample_token"]
    while tok:
        samples.append(nusc.get("sample", tok))
        tok = samples[-1]["next"]

    n, prev_ts, prev_id = 0, -1, -1
    for fs, sample in zip(src.frame_sets(), samples, strict=True):
        assert fs.scene == "scene-0523" and fs.new_scene == (n == 0)
        assert fs.frame_id > prev_id and fs.timestamp_us > prev_ts
        prev_id, prev_ts = fs.frame_id, fs.timestamp_us
        assert fs.sample_token == sample["token"] and fs.timestamp_us == sample["timestamp"]
        assert fs.channels == CAMERA_CHANNELS and not fs.degraded
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        ref = Pose.from_record(nusc.get("ego_pose", lidar["ego_pose_token"]))
        np.testing.assert_allclose(fs.ego_to_global.matrix, ref.matrix)
        assert [t.stage for t in fs.timings] == ["load"]
        for cam in fs.cameras:
            sd = nusc.get("sample_data", sample["data"][cam.channel])
            cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
            assert cam.sample_data_token == sd["token"] and cam.timestamp_us == sd["timestamp"]
            assert cam.is_key_frame and cam.sample_token == sample["token"]
            assert cam.size == (1600, 900) and cam.image.dtype == np.uint8 and cam.image.shape == (900, 1600, 3)
            np.testing.assert_array_equal(cam.intrinsic, np.array(cs["camera_intrinsic"]))
            np.testing.assert_allclose(cam.sensor_to_ego.matrix, Pose.from_record(cs).matrix)
            ego = Pose.from_record(nusc.get("ego_pose", sd["ego_pose_token"]))
            np.testing.assert_allclose(cam.ego_to_global.matrix, ego.matrix)
        # kinematics vs the mean motion between neighbouring keyframes (independent, coarse)
        if 0 < n < len(samples) - 1:
            p0, p1 = (Pose.from_record(nusc.get("ego_pose", nusc.get("sample_data", s["data"]["LIDAR_TOP"])["ego_pose_token"]))
                      for s in (samples[n - 1], samples[n + 1]))
            dt = (samples[n + 1]["timestamp"] - samples[n - 1]["timestamp"]) * 1e-6
            mean_speed = np.linalg.norm(p1.translation[:2] - p0.translation[:2]) / dt
            dyaw = math.remainder(p1.yaw - p0.yaw, 2 * math.pi) / dt
            assert fs.kinematics.speed == pytest.approx(mean_speed, abs=1.0)
            assert fs.kinematics.yaw_rate == pytest.approx(dyaw, abs=0.05)
            assert fs.kinematics.velocity[0] > 0  # driving forwards
        n += 1
    assert n == 40
    warnings = [r for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    msg = warnings[0].getMessage()
    assert "scene-0523" in msg and "1148 of 1148 camera sweep files absent" in msg and "40 replayed" in msg
    assert src.skipped == []


def test_decode_for_decodes_jpegs_at_a_dct_scale_with_the_intrinsic_of_that_scale(real_scene_root):
    from schema.camera import scale_intrinsic

    src = NuScenesSource(real_scene_root, "v1.0-trainval", keyframes_only=True)
    full = next(src.frame_sets())
    asked = []

    def needed(k, size):
        asked.append(size)
        return size[0] // 2 - 10, size[1] // 2 - 10  # 1/2 is the coarsest DCT scale at least this big

    src.decode_for(needed)
    half = next(src.frame_sets())
    assert asked[0] == full.cameras[0].image.shape[:2] == (900, 1600)
    for a, b in zip(full.cameras, half.cameras):
        assert b.image.shape == (450, 800, 3)
        np.testing.assert_allclose(b.intrinsic, scale_intrinsic(a.intrinsic, 0.5, 0.5))
        box = a.image.reshape(450, 2, 800, 2, 3).astype(np.float64).mean(axis=(1, 3))  # the 2x2 mean, pixel centres alike
        assert np.abs(box - b.image).mean() < 2.0, "the same picture, pixel for pixel"
    src.decode_for(None)
    again = next(src.frame_sets())
    np.testing.assert_array_equal(again.cameras[0].image, full.cameras[0].image)


def test_decode_for_defer_leaves_jpegs_encoded_with_the_same_intrinsics_and_pixels(real_scene_root):
    """decode_for(defer=True): each camera carries an EncodedImage (replay_decode: backbone) whose promised shape,
    intrinsic and decoded pixels are those of decoding in the source."""
    from replay.jpeg import decode_encoded
    from schema.messages import EncodedImage

    src = NuScenesSource(real_scene_root, "v1.0-trainval", keyframes_only=True)

    def needed(k, size):
        return 226, 402  # the shipped rectifier's need for nuScenes: decodes at 1/2

    src.decode_for(needed)
    now = next(src.frame_sets())
    src.decode_for(needed, defer=True)
    later = next(src.frame_sets())
    src.decode_for(None)
    assert [c.channel for c in now.cameras] == [c.channel for c in later.cameras]
    for a, b in zip(now.cameras, later.cameras):
        assert isinstance(b.image, EncodedImage) and b.image.shape == a.image.shape and b.size == a.size
        np.testing.assert_array_equal(b.intrinsic, a.intrinsic)
        np.testing.assert_array_equal(decode_encoded(b.image), a.image)


def test_real_scene_selection_errors_and_splits(real_scene_root, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        NuScenesSource(tmp_path / "nope", "v1.0-trainval")
    with pytest.raises(FileNotFoundError, match="v1.0-mini"):
        NuScenesSource(real_scene_root, "v1.0-mini")
    with pytest.raises(ValueError, match=r"scene-9999.*available: \['scene-0523'\]"):
        NuScenesSource(real_scene_root, "v1.0-trainval", scenes=["scene-9999"])
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        NuScenesSource(real_scene_root, "v1.0-trainval", split="valid")
    assert NuScenesSource(real_scene_root, "v1.0-trainval", split="val").scene_names == ["scene-0523"]
    train = NuScenesSource(real_scene_root, "v1.0-trainval", split="train")
    assert train.scene_names == [] and list(train.frame_sets()) == []
    src = NuScenesSource(real_scene_root, "v1.0-trainval", scenes=["scene-0523"], keyframes_only=True)
    assert len(src) == 40 and "keyframes," in src.describe()


# --- a tiny synthetic dataroot with sweeps -----------------------------------------------------------
SCENES = ("scene-0103", "scene-0061")  # table order; mini_val and mini_train in the devkit's splits
OFFSETS = {"CAM_FRONT": -38_000, "CAM_FRONT_RIGHT": -30_000, "CAM_BACK_RIGHT": -22_500,
           "CAM_BACK": -13_000, "CAM_BACK_LEFT": -3_300, "CAM_FRONT_LEFT": -45_900}
CYCLES = 13  # keyframes at cycles 0, 6, 12 (2 Hz), sweeps between
SPEED = 5.0


def _tok() -> str:
    return uuid.uuid4().hex


def make_dataroot(root: Path) -> dict:
    """Write a minimal v1.0-mini dataroot: 2 scenes x 13 cycles x 6 cameras, 32x18 JPEGs."""
    rng = np.random.default_rng(0)
    t = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
                         "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map")}
    log_tok = _tok()
    t["log"].append({"token": log_tok, "logfile": "synthetic", "vehicle": "v", "date_captured": "2026-01-01",
                     "location": "singapore-onenorth"})
    (root / "maps").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "maps" / "m.png")
    t["map"].append({"token": _tok(), "category": "semantic_prior", "filename": "maps/m.png", "log_tokens": [log_tok]})
    t["category"].append({"token": _tok(), "name": "vehicle.car", "description": ""})
    cs = {}
    for ch in CAMERA_CHANNELS + ("LIDAR_TOP",):
        s_tok, c_tok = _tok(), _tok()
        t["sensor"].append({"token": s_tok, "channel": ch, "modality": "lidar" if ch == "LIDAR_TOP" else "camera"})
        intr = [[20.0 + len(ch), 0, 16], [0, 20.0, 9], [0, 0, 1]] if ch != "LIDAR_TOP" else []
        t["calibrated_sensor"].append({"token": c_tok, "sensor_token": s_tok, "translation": [1.0, 0.0, 1.5],
                                       "rotation": [0.5, -0.5, 0.5, -0.5], "camera_intrinsic": intr})
        cs[ch] = c_tok
    info = {"scene_start": {}, "sample_tokens": {}}
    t_scene = 1_600_000_000_000_000
    for name in SCENES:
        scene_tok = _tok()
        samples = [{"token": _tok(), "timestamp": t_scene + k * 500_000, "scene_token": scene_tok}
                    for k in range(3)]
        for i, s in enumerate(samples):
            s["prev"] = samples[i - 1]["token"] if i else ""
            s["next"] = samples[i + 1]["token"] if i < 2 else ""
        t["sample"] += samples
        info["sample_tokens"][name] = [s["token"] for s in samples]
        info["scene_start"][name] = t_scene
        last = {}
        for k in range(CYCLES):
            cycle_t = t_scene + round(k * 500_000 / 6)
            key = k % 6 == 0
            sample = samples[min(round(k / 6), 2)]
            for ch in CAMERA_CHANNELS + (("LIDAR_TOP",) if key else ()):
                ts = cycle_t + (OFFSETS.get(ch, 0) + int(rng.integers(-1000, 1000)) if ch != "LIDAR_TOP" else 0)
                ep = _tok()
                t["ego_pose"].append({"token": ep, "timestamp": ts, "rotation": [1, 0, 0, 0],
                                      "translation": [SPEED * (ts - t_scene) * 1e-6, 0.0, 0.0]})
                folder = "samples" if key else "sweeps"
                ext = "pcd.bin" if ch == "LIDAR_TOP" else "jpg"
                fname = f"{folder}/{ch}/{name}__{ch}__{ts}.{ext}"
                sd = {"token": _tok(), "sample_token": sample["token"], "ego_pose_token": ep,
                      "calibrated_sensor_token": cs[ch], "timestamp": ts, "fileformat": ext.split(".")[0],
                      "is_key_frame": key, "height": 18, "width": 32, "filename": fname,
                      "prev": last[ch]["token"] if ch in last else "", "next": ""}
                if ch in last:
                    last[ch]["next"] = sd["token"]
                last[ch] = sd
                t["sample_data"].append(sd)
                if ch != "LIDAR_TOP":
                    (root / fname).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(rng.integers(0, 255, (18, 32, 3), dtype=np.uint8)).save(root / fname)
        t["scene"].append({"token": scene_tok, "log_token": log_tok, "nbr_samples": 3, "name": name,
                           "description": "", "first_sample_token": samples[0]["token"],
                           "last_sample_token": samples[-1]["token"]})
        t_scene += 60_000_000
    (root / "v1.0-mini").mkdir()
    for k, rows in t.items():
        (root / "v1.0-mini" / f"{k}.json").write_text(json.dumps(rows))
    info["sample_data"] = t["sample_data"]
    return info


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nusc")
    return root, make_dataroot(root)


def test_sweeps_and_keyframes_in_order_scene_by_scene(synthetic_root, caplog):
    root, info = synthetic_root
    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = NuScenesSource(root, "v1.0-mini")
    sets = list(src.frame_sets())
    assert len(sets) == len(src) == 2 * CYCLES
    assert [s.frame_id for s in sets] == list(range(2 * CYCLES))
    assert [s.scene for s in sets] == [SCENES[0]] * CYCLES + [SCENES[1]] * CYCLES  # table order
    assert [s.new_scene for s in sets] == ([True] + [False] * (CYCLES - 1)) * 2
    for name in SCENES:
        mine = [s for s in sets if s.scene == name]
        ts = [c.timestamp_us for s in mine for c in sorted(s.cameras, key=lambda c: c.timestamp_us)]
        assert ts == sorted(ts), "camera timestamps go back in time within a scene"
        assert [s.sample_token for s in mine if s.is_keyframe] == info["sample_tokens"][name]
        assert [i for i, s in enumerate(mine) if s.is_keyframe] == [0, 6, 12]
        for k, s in enumerate(mine):
            assert not s.degraded and s.cameras[0].image.shape == (18, 32, 3)
            cycle_t = info["scene_start"][name] + round(k * 500_000 / 6)
            assert all(abs(c.timestamp_us - OFFSETS[c.channel] - cycle_t) <= 1000 for c in s.cameras)
            assert s.kinematics.velocity[0] == pytest.approx(SPEED, rel=0.02)  # ego x: forward
            assert abs(s.kinematics.yaw_rate) < 1e-9
    assert not caplog.records  # nothing absent, nothing to say


def test_scene_subset_order_keyframes_only_and_split(synthetic_root):
    root, info = synthetic_root
    src = NuScenesSource(root, "v1.0-mini", scenes=[SCENES[1], SCENES[0]], keyframes_only=True)
    sets = list(src.frame_sets())
    assert [s.scene for s in sets] == [SCENES[1]] * 3 + [SCENES[0]] * 3  # the order asked for
    assert all(s.is_keyframe for s in sets)
    assert NuScenesSource(root, "v1.0-mini", split="mini_val").scene_names == ["scene-0103"]
    assert NuScenesSource(root, "v1.0-mini", split="mini_train").scene_names == ["scene-0061"]


def test_realtime_pacing_with_a_speed_factor(synthetic_root):
    root, _ = synthetic_root
    src = NuScenesSource(root, "v1.0-mini", scenes=[SCENES[0]], realtime=True, speed=4.0, skip_late=False)
    start = time.monotonic()
    sets = list(src.frame_sets())
    elapsed = time.monotonic() - start
    span = (sets[-1].timestamp_us - sets[0].timestamp_us) * 1e-6
    assert elapsed >= span / 4.0 * 0.98  # never faster than the log at 4x (span 1 s -> >= 0.25 s)


def test_realtime_replay_records_each_scenes_clock_mapping(synthetic_root):
    root, _ = synthetic_root
    src = NuScenesSource(root, "v1.0-mini", keyframes_only=True, realtime=True, speed=8.0, skip_late=False)
    assert src.stats.summary() == {}  # nothing paced yet
    before = time.time_ns()
    sets = list(src.frame_sets())
    after = time.time_ns()
    clock = src.stats.summary()["clock"]
    firsts = [s for s in sets if s.new_scene]
    assert [a["scene"] for a in clock] == [s.scene for s in firsts] == list(src.scene_names)
    assert [a["log_us"] for a in clock] == [s.timestamp_us for s in firsts] and {a["speed"] for a in clock} == {8.0}
    for anchor, first in zip(clock, firsts):
        # the mapping holds: no set of the scene was loaded before its log time mapped onto the wall clock
        assert before <= anchor["wall_ns"] <= first.timings[0].start_ns <= after
        for s in sets:
            if s.scene == anchor["scene"]:
                mapped_ns = anchor["wall_ns"] + (s.timestamp_us - anchor["log_us"]) * 1000 / anchor["speed"]
                assert s.timings[0].start_ns >= mapped_ns - 2e6  # (2 ms: the pacer sleeps on the monotonic clock)
    assert NuScenesSource(root, "v1.0-mini", keyframes_only=True).stats.summary() == {}  # unpaced: no clock


@pytest.mark.parametrize("skip_late", [True, False])
def test_a_realtime_replay_behind_the_log_passes_over_stale_cycles_as_drop_records(synthetic_root, skip_late):
    """A consumer slower than the log (here 60 ms per set, cycles due every ~21 ms at 4x): with skip_late each set
    handed out is the newest cycle due when it was asked for, and every cycle passed over is an 'overload' drop
    record in its place (frame ids strictly increasing, every planned cycle accounted for); without, every cycle
    loads and the replay falls behind the log."""
    root, _ = synthetic_root
    src = NuScenesSource(root, "v1.0-mini", scenes=[SCENES[0]], realtime=True, speed=4.0, skip_late=skip_late)
    items, asked = [], []
    for item in src.frame_sets():
        items.append(item)
        if isinstance(item, DropRecord):
            continue
        time.sleep(0.06)  # the runtime's work on this set
        asked.append(time.monotonic())
    clock = src.stats.summary()["clock"][0]
    assert [i.frame_id for i in items] == list(range(len(src)))  # every planned cycle, in order
    drops = [i for i in items if isinstance(i, DropRecord)]
    assert all(d.reason == "overload" and "behind the log" in d.detail for d in drops)
    assert src.stats.late_skipped == len(drops)
    if not skip_late:
        assert drops == []
        return
    assert len(drops) >= len(src) // 2  # ~2 of every 3 cycles are stale at 60 ms a set
    sets = [i for i in items if not isinstance(i, DropRecord)]
    assert sets[0].new_scene and not any(s.new_scene for s in sets[1:])
    for fs, t_asked in zip(sets[1:], asked):  # each set loaded was the newest due when the consumer asked
        due_s = (fs.timestamp_us - clock["log_us"]) * 1e-6 / 4.0
        started_s = (fs.timings[0].start_ns - clock["wall_ns"]) * 1e-9
        assert due_s <= started_s + 0.005 and started_s - due_s < 0.021 + 0.06


def test_corrupt_and_absent_images_degrade_their_sets(tmp_path, caplog):
    info = make_dataroot(tmp_path)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    sds = info["sample_data"]
    corrupt = [sd for sd in sds if "__CAM_BACK__" in sd["filename"] and not sd["is_key_frame"]][4]
    (tmp_path / corrupt["filename"]).write_bytes(b"not a jpeg")
    absent = [sd for sd in sds if "__CAM_FRONT__" in sd["filename"] and not sd["is_key_frame"]][:2]
    for sd in absent:
        (tmp_path / sd["filename"]).unlink()
    src = NuScenesSource(tmp_path, "v1.0-mini", scenes=[SCENES[0]])
    sets = list(src.frame_sets())
    assert len(sets) == CYCLES
    by_missing = {s.frame_id: s.missing for s in sets if s.degraded}
    assert sorted(by_missing.values()) == [("CAM_BACK",), ("CAM_FRONT",), ("CAM_FRONT",)]
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("undecodable image" in m and corrupt["filename"] in m for m in msgs) == 1
    assert sum("2 of 60 camera sweep files absent" in m for m in msgs) == 1
    assert len(msgs) == 2


# --- the simulator's own export (sweeps present), shared session fixture of tests/replay/conftest.py ---
def test_exported_simulated_dataset_replays_every_camera_image_once(sim_dataset, sim_nusc, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    src = NuScenesSource(sim_dataset.dataroot, sim_dataset.version)
    sets = list(src.frame_sets())
    assert not caplog.records and src.skipped == []
    assert [s.frame_id for s in sets] == list(range(len(sets)))
    used = [c.sample_data_token for s in sets for c in s.cameras]
    cams = [sd["token"] for sd in sim_nusc.sample_data if sd["channel"] in CAMERA_CHANNELS]
    assert sorted(used) == sorted(cams)  # every camera image exactly once
    assert all(not s.degraded for s in sets)
    for rec in sim_nusc.scene:
        mine = [s for s in sets if s.scene == rec["name"]]
        assert mine[0].new_scene and not any(s.new_scene for s in mine[1:])
        assert all(b.timestamp_us > a.timestamp_us for a, b in zip(mine, mine[1:]))
        tokens, tok = [], rec["first_sample_token"]
        while tok:
            tokens.append(tok)
            tok = sim_nusc.get("sample", tok)["next"]
        assert [s.sample_token for s in mine if s.is_keyframe] == tokens
        for s in mine:  # one cycle: the six exposures span less than the rig's 43 ms firing spread + slack
            ts = [c.timestamp_us for c in s.cameras]
            assert max(ts) - min(ts) < 50_000
