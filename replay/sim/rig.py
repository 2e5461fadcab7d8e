"""The nuScenes sensor rig: the real car's six cameras and LIDAR_TOP, embedded as constants.

The numbers are those of scene-0523's `calibrated_sensor.json` joined with `sensor.json`
(intrinsics for 1600x900 images), and the per-camera firing offsets within the 12 Hz cycle
are the medians over its keyframes of (camera timestamp - CAM_FRONT timestamp), so the
simulated rig looks and fires like the real one. `camera_rig` scales the intrinsics to any
resolution.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyquaternion import Quaternion

from schema.messages import CAMERA_CHANNELS, Pose

# The resolution the real intrinsics are given for.
REAL_WIDTH, REAL_HEIGHT = 1600, 900

# channel -> (translation [x, y, z] m, rotation [w, x, y, z], intrinsic 3x3 at 1600x900 or None)
REAL_CALIBRATION: dict[str, tuple[list[float], list[float], list[list[float]] | None]] = {
    "CAM_FRONT": (
        [1.72200568478, 0.00475453292289, 1.49491291905],
        [0.5077241387638071, -0.4973392230703816, 0.49837167536166627, -0.4964832014373754],
        [[1252.8131021185304, 0.0, 826.588114781398], [0.0, 1252.8131021185304, 469.9846626224581], [0.0, 0.0, 1.0]],
    ),
    "CAM_FRONT_RIGHT": (
        [1.58082565783, -0.499078711449, 1.51749368405],
        [0.20335173766558642, -0.19146333228946724, 0.6785710044972951, -0.6793609166212989],
        [[1256.7485116440405, 0.0, 817.7887570959712], [0.0, 1256.7485116440403, 451.9541780095127], [0.0, 0.0, 1.0]],
    ),
    "CAM_BACK_RIGHT": (
        [1.05945173053, -0.46720294852, 1.55050857555],
        [0.13819187705364147, -0.13796718183628456, -0.6893329941542625, 0.697630335509333],
        [[1249.9629280788233, 0.0, 825.3768045375984], [0.0, 1249.9629280788233, 462.54816385708756], [0.0, 0.0, 1.0]],
    ),
    "CAM_BACK": (
        [0.05524611077, 0.0107882366898, 1.56794286957],
        [0.5067997344989889, -0.4977567019405021, -0.4987849934090844, 0.496594225837321],
        [[796.8910634503094, 0.0, 857.7774326863696], [0.0, 796.8910634503094, 476.8848988407415], [0.0, 0.0, 1.0]],
    ),
    "CAM_BACK_LEFT": (
        [1.04852047718, 0.483058131052, 1.56210154484],
        [0.7048620297871717, -0.6907306801461466, -0.11209091960167808, 0.11617345743327073],
        [[1254.9860565800168, 0.0, 829.5769333630991], [0.0, 1254.9860565800168, 467.1680561863987], [0.0, 0.0, 1.0]],
    ),
    "CAM_FRONT_LEFT": (
        [1.5752559464, 0.500519383135, 1.50696032589],
        [0.6812088525125634, -0.6687507165046241, 0.2101702448905517, -0.21108161122114324],
        [[1257.8625342125129, 0.0, 827.2410631095686], [0.0, 1257.8625342125129, 450.915498205774], [0.0, 0.0, 1.0]],
    ),
    "LIDAR_TOP": (
        [0.985793, 0.0, 1.84019],
        [0.706749235646644, -0.015300993788500868, 0.01739745181256607, -0.7070846669051719],
        None,
    ),
}

# Median firing offset of each sensor relative to CAM_FRONT within one cycle, microseconds
# (scene-0523 keyframes). The cameras fire in turn as the lidar sweeps past them; CAM_FRONT_LEFT
# fires just before CAM_FRONT. LIDAR_TOP is the keyframe (sweep end) time.
TIME_OFFSET_US: dict[str, int] = {
    "CAM_FRONT": 0,
    "CAM_FRONT_RIGHT": 8078,
    "CAM_BACK_RIGHT": 15709,
    "CAM_BACK": 25154,
    "CAM_BACK_LEFT": 35001,
    "CAM_FRONT_LEFT": -7605,
    "LIDAR_TOP": 38248,
}

CAMERA_RATE_HZ = 12.0
LIDAR_RATE_HZ = 20.0


@dataclass(frozen=True)
class SensorCalibration:
    """One sensor of the rig: its pose on the car, intrinsics at its resolution, firing offset."""

    channel: str  # 'CAM_FRONT', ..., or 'LIDAR_TOP'
    sensor_to_ego: Pose
    intrinsic: np.ndarray | None  # (3, 3) for (width, height); None for the lidar
    width: int  # 0 for the lidar
    height: int  # 0 for the lidar
    time_offset_us: int  # firing offset within the 12 Hz cycle (CAM_FRONT ~ 0)

    @property
    def is_camera(self) -> bool:
        return self.intrinsic is not None


def scale_intrinsic(intrinsic: np.ndarray, width: int, height: int) -> np.ndarray:
    """Scale a 1600x900 intrinsic matrix to (width, height): fx, cx by width/1600, fy, cy by height/900."""
    k = np.array(intrinsic, dtype=np.float64)
    k[0, :] *= width / REAL_WIDTH
    k[1, :] *= height / REAL_HEIGHT
    return k


def camera_rig(width: int = 800, height: int = 450) -> dict[str, SensorCalibration]:
    """The six cameras in CAMERA_CHANNELS order, intrinsics scaled from 1600x900 to (width, height)."""
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"camera resolution must be positive, got {width}x{height}")
    rig = {}
    for ch in CAMERA_CHANNELS:
        t, q, k = REAL_CALIBRATION[ch]
        rig[ch] = SensorCalibration(
            channel=ch,
            sensor_to_ego=Pose(np.array(t), Quaternion(q)),
            intrinsic=scale_intrinsic(np.array(k), int(width), int(height)),
            width=int(width),
            height=int(height),
            time_offset_us=TIME_OFFSET_US[ch],
        )
    return rig


def lidar_calibration() -> SensorCalibration:
    """LIDAR_TOP of the real rig (no intrinsics, no image)."""
    t, q, _ = REAL_CALIBRATION["LIDAR_TOP"]
    return SensorCalibration(
        channel="LIDAR_TOP",
        sensor_to_ego=Pose(np.array(t), Quaternion(q)),
        intrinsic=None,
        width=0,
        height=0,
        time_offset_us=TIME_OFFSET_US["LIDAR_TOP"],
    )
