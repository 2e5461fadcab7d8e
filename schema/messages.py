"""Typed messages that flow through bevstream: one schema for every source and every stage.

Every source (nuScenes log replay, the live simulated vehicle, anything later) yields these same
types, so the runtime cannot tell them apart. Messages are frozen dataclasses; large arrays are
numpy arrays that travel through the Ray object store by reference.

Conventions (those of nuScenes):
- timestamps are integer microseconds (`*_us`); stage timings are wall-clock nanoseconds
  (`time.time_ns()`), so end-to-end latency can be measured from a sensor timestamp;
- a `Pose` maps points from a child frame into its parent frame (sensor -> ego, ego -> global);
- images are (H, W, 3) uint8 RGB, or an `EncodedImage` (a replay's JPEG, decoded where the backbone runs).

This module imports no Ray and no torch: sources and pure code may import it freely.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping, Sequence, TypeVar

import numpy as np
from pyquaternion import Quaternion

# The six cameras of the nuScenes rig, clockwise from the front. Every per-camera array in the
# project follows this order.
CAMERA_CHANNELS: tuple[str, ...] = (
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_RIGHT",
    "CAM_BACK",
    "CAM_BACK_LEFT",
    "CAM_FRONT_LEFT",
)


@dataclass(frozen=True)
class Pose:
    """Rigid transform mapping points from a child frame into its parent frame."""

    translation: np.ndarray  # (3,) float64, metres
    rotation: Quaternion

    def __post_init__(self) -> None:
        t = np.asarray(self.translation, dtype=np.float64).reshape(3)
        object.__setattr__(self, "translation", t)
        if not isinstance(self.rotation, Quaternion):
            object.__setattr__(self, "rotation", Quaternion(self.rotation))

    def __reduce__(self):
        # seven floats: pickling the numpy translation and the Quaternion object field by field costs ~40x more,
        # and a pose travels with every frame set, camera and tick result
        return _pose_from_elements, (tuple(self.translation.tolist()), tuple(self.rotation.elements.tolist()))

    @classmethod
    def identity(cls) -> "Pose":
        return cls(np.zeros(3), Quaternion())

    @classmethod
    def from_record(cls, record: Mapping) -> "Pose":
        """From a nuScenes table row with 'translation' [x, y, z] and 'rotation' [w, x, y, z]."""
        return cls(np.asarray(record["translation"], dtype=np.float64), Quaternion(record["rotation"]))

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> "Pose":
        """From a (4, 4) homogeneous transform."""
        return cls(matrix[:3, 3].copy(), Quaternion(matrix=matrix[:3, :3], atol=1e-6, rtol=1e-6))

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous transform."""
        m = np.eye(4)
        m[:3, :3] = self.rotation.rotation_matrix
        m[:3, 3] = self.translation
        return m

    @property
    def yaw(self) -> float:
        """Heading about the parent's z axis, radians."""
        return float(self.rotation.yaw_pitch_roll[0])

    def inverse(self) -> "Pose":
        inv = self.rotation.inverse
        return Pose(-inv.rotate(self.translation), inv)

    def __matmul__(self, other: "Pose") -> "Pose":
        """Composition: (self @ other) maps other's child frame into self's parent frame."""
        return Pose(self.translation + self.rotation.rotate(other.translation), self.rotation * other.rotation)

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points in the child frame -> (N, 3) in the parent frame."""
        return points @ self.rotation.rotation_matrix.T + self.translation

    def is_finite(self) -> bool:
        return bool(np.all(np.isfinite(self.translation)) and np.all(np.isfinite(self.rotation.elements)))

    def to_record(self) -> dict:
        return {"translation": self.translation.tolist(), "rotation": self.rotation.elements.tolist()}


def _pose_from_elements(translation: tuple, rotation: tuple) -> Pose:
    return Pose(np.array(translation, np.float64), Quaternion(np.array(rotation, np.float64)))


@dataclass(frozen=True)
class EgoKinematics:
    """Ego motion at a timestamp, expressed in the ego frame (x forward, y left, z up)."""

    velocity: np.ndarray  # (3,) m/s
    acceleration: np.ndarray  # (3,) m/s^2
    yaw_rate: float  # rad/s, counter-clockwise positive

    @classmethod
    def zero(cls) -> "EgoKinematics":
        return cls(np.zeros(3), np.zeros(3), 0.0)

    @property
    def speed(self) -> float:
        return float(np.linalg.norm(self.velocity[:2]))

    def as_array(self) -> np.ndarray:
        """(7,) float32: vx, vy, vz, ax, ay, az, yaw_rate; the model's kinematics input."""
        return np.concatenate([self.velocity, self.acceleration, [self.yaw_rate]]).astype(np.float32)


@dataclass(frozen=True)
class StageTiming:
    """One stage a message passed: wall-clock nanoseconds (time.time_ns())."""

    stage: str
    start_ns: int
    end_ns: int

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


_H = TypeVar("_H", bound="FrameHeader")


@dataclass(frozen=True, kw_only=True)
class FrameHeader:
    """What every message about one frame set carries, declared once: FrameSet, the runtime's TickMeta, and
    what the set ends as (TickResult or DropRecord). Keyword-only, so each message keeps its own fields'
    order in front; in JSON the header stays flat (`header_json`)."""

    frame_id: int  # strictly increasing within a stream
    scene: str  # scene name; a change of scene resets the temporal state
    timestamp_us: int  # reference time of the cycle (the keyframe's, else the earliest camera's)
    sample_token: str | None = None  # the nuScenes keyframe sample, where this cycle is one
    timings: tuple[StageTiming, ...] = ()  # the stages passed so far, in order

    def with_timing(self: _H, timing: StageTiming) -> _H:
        return replace(self, timings=self.timings + (timing,))

    def header_json(self) -> dict:
        """The header's fields for a JSON line, timings as dicts of integer nanoseconds."""
        return {"frame_id": self.frame_id, "scene": self.scene, "timestamp_us": self.timestamp_us,
                "sample_token": self.sample_token, "timings": timings_json(self.timings)}

    @staticmethod
    def header_from_json(d: Mapping) -> dict:
        """`header_json`'s fields back, as keyword arguments of any message."""
        return {"frame_id": int(d["frame_id"]), "scene": d["scene"], "timestamp_us": int(d["timestamp_us"]),
                "sample_token": d["sample_token"], "timings": timings_from_json(d["timings"])}


def timings_json(timings: Sequence[StageTiming]) -> list[dict]:
    return [{"stage": t.stage, "start_ns": t.start_ns, "end_ns": t.end_ns} for t in timings]


def timings_from_json(items: Sequence[dict]) -> tuple[StageTiming, ...]:
    return tuple(StageTiming(t["stage"], int(t["start_ns"]), int(t["end_ns"])) for t in items)


@dataclass(frozen=True)
class EncodedImage:
    """A camera image still compressed: a JPEG file's bytes and the (H, W, 3) it decodes to at 1/`scale` of its
    full size (libjpeg's DCT scaling). A replay hands these on so that decoding runs in the backbone's
    process (runtime.stages, replay/jpeg.py) instead of the driver, and the object store carries ~10x fewer bytes."""

    data: bytes
    shape: tuple[int, int, int]  # (H, W, 3) of the decoded image
    scale: int = 1  # 1, 2, 4 or 8


@dataclass(frozen=True)
class CameraFrame:
    """One image of one camera, with its calibration and the ego pose at its own timestamp."""

    channel: str  # one of CAMERA_CHANNELS
    frame_id: int  # the 12 Hz cycle this frame belongs to, counted from the stream's start
    timestamp_us: int  # sensor (exposure) timestamp
    image: np.ndarray | EncodedImage  # (H, W, 3) uint8 RGB, or still compressed (decoded by the backbone stage)
    intrinsic: np.ndarray  # (3, 3) float64, for this image's own (decoded) resolution
    sensor_to_ego: Pose
    ego_to_global: Pose  # ego pose at timestamp_us
    scene: str  # scene name; a change of scene resets the temporal state
    sample_data_token: str | None = None  # nuScenes sample_data row, where there is one
    is_key_frame: bool = False
    sample_token: str | None = None  # the keyframe's sample, where is_key_frame
    arrival_ns: int | None = None  # wall clock when a live source delivered it

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])  # an EncodedImage has the decoded shape too


@dataclass(frozen=True)
class FrameSet(FrameHeader):
    """The cameras of one 12 Hz cycle, synchronised: the unit of work of one tick (header: FrameHeader)."""

    cameras: tuple[CameraFrame, ...]  # the cameras present, in CAMERA_CHANNELS order
    missing: tuple[str, ...]  # channels absent or late in this cycle
    ego_to_global: Pose  # ego pose at timestamp_us
    kinematics: EgoKinematics  # derived from the poses (replay) or the vehicle (live)
    new_scene: bool = False  # first set of a scene or after a time jump: reset temporal state

    @property
    def degraded(self) -> bool:
        return bool(self.missing)

    @property
    def is_keyframe(self) -> bool:
        return self.sample_token is not None

    @property
    def oldest_timestamp_us(self) -> int:
        """The earliest sensor timestamp in the set: end-to-end latency is measured from it."""
        return min((c.timestamp_us for c in self.cameras), default=self.timestamp_us)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(c.channel for c in self.cameras)

    def camera(self, channel: str) -> CameraFrame:
        for c in self.cameras:
            if c.channel == channel:
                return c
        raise KeyError(f"{channel} is not in frame set {self.frame_id} (missing: {self.missing})")


def order_cameras(frames: Sequence[CameraFrame]) -> tuple[CameraFrame, ...]:
    """Sort frames into CAMERA_CHANNELS order (unknown channels are an error)."""
    index = {c: i for i, c in enumerate(CAMERA_CHANNELS)}
    for f in frames:
        if f.channel not in index:
            raise ValueError(f"unknown camera channel {f.channel!r}; expected one of {CAMERA_CHANNELS}")
    return tuple(sorted(frames, key=lambda f: index[f.channel]))
