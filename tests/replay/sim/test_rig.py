"""The simulated rig equals the real nuScenes rig (calibrated_sensor + sensor tables) and scales correctly."""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from replay.sim.rig import REAL_HEIGHT, REAL_WIDTH, TIME_OFFSET_US, camera_rig, lidar_calibration
from schema.messages import CAMERA_CHANNELS


def _real_tables(root):
    tables = root / "v1.0-trainval"
    sensors = {s["token"]: s["channel"] for s in json.loads((tables / "sensor.json").read_text())}
    calib = {c["token"]: c for c in json.loads((tables / "calibrated_sensor.json").read_text())}
    by_channel = {sensors[c["sensor_token"]]: c for c in calib.values()}
    return by_channel, calib, sensors, tables


def test_rig_equals_real_calibration(real_scene_root):
    by_channel, _, _, _ = _real_tables(real_scene_root)
    rig = camera_rig(REAL_WIDTH, REAL_HEIGHT)
    for ch in CAMERA_CHANNELS:
        real, sim = by_channel[ch], rig[ch]
        np.testing.assert_allclose(sim.sensor_to_ego.translation, real["translation"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(sim.sensor_to_ego.rotation.elements, real["rotation"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(sim.intrinsic, real["camera_intrinsic"], rtol=0, atol=1e-9)
        assert (sim.width, sim.height) == (1600, 900)
    lidar = lidar_calibration()
    np.testing.assert_allclose(lidar.sensor_to_ego.translation, by_channel["LIDAR_TOP"]["translation"], atol=1e-12)
    np.testing.assert_allclose(lidar.sensor_to_ego.rotation.elements, by_channel["LIDAR_TOP"]["rotation"], atol=1e-12)
    assert lidar.intrinsic is None and lidar.width == 0 and lidar.height == 0


def test_firing_offsets_match_real_keyframes(real_scene_root):
    """Median (camera - CAM_FRONT) timestamp per keyframe sample, as on the real car."""
    _, calib, sensors, tables = _real_tables(real_scene_root)
    per_sample = defaultdict(dict)
    for sd in json.loads((tables / "sample_data.json").read_text()):
        if sd["is_key_frame"]:
            ch = sensors[calib[sd["calibrated_sensor_token"]]["sensor_token"]]
            per_sample[sd["sample_token"]][ch] = sd["timestamp"]
    for ch in list(CAMERA_CHANNELS) + ["LIDAR_TOP"]:
        offsets = [s[ch] - s["CAM_FRONT"] for s in per_sample.values() if ch in s and "CAM_FRONT" in s]
        assert abs(np.median(offsets) - TIME_OFFSET_US[ch]) <= 1, ch
    # the cameras fire within one 12 Hz cycle
    spread = max(TIME_OFFSET_US[c] for c in CAMERA_CHANNELS) - min(TIME_OFFSET_US[c] for c in CAMERA_CHANNELS)
    assert 0 < spread < 1e6 / 12


def test_default_rig_scales_intrinsics():
    full, half = camera_rig(1600, 900), camera_rig()
    assert tuple(half) == CAMERA_CHANNELS
    for ch in CAMERA_CHANNELS:
        k, k2 = full[ch].intrinsic, half[ch].intrinsic
        assert (half[ch].width, half[ch].height) == (800, 450)
        np.testing.assert_allclose(k2[0], k[0] * 0.5)
        np.testing.assert_allclose(k2[1], k[1] * 0.5)
        np.testing.assert_allclose(k2[2], [0, 0, 1])
        # the same 3D point lands on the same relative image position at both resolutions
        p = np.array([1.0, -0.5, 10.0])
        uv_full, uv_half = k @ p, k2 @ p
        np.testing.assert_allclose(uv_half[:2] / uv_half[2], uv_full[:2] / uv_full[2] * 0.5)
        np.testing.assert_array_equal(half[ch].sensor_to_ego.matrix, full[ch].sensor_to_ego.matrix)
        assert half[ch].time_offset_us == full[ch].time_offset_us == TIME_OFFSET_US[ch]
    odd = camera_rig(640, 480)["CAM_BACK"].intrinsic
    np.testing.assert_allclose(odd[0, 0], full["CAM_BACK"].intrinsic[0, 0] * 640 / 1600)
    np.testing.assert_allclose(odd[1, 2], full["CAM_BACK"].intrinsic[1, 2] * 480 / 900)


def test_bad_resolution_is_rejected():
    with pytest.raises(ValueError, match="resolution"):
        camera_rig(0, 450)
