"""What a tick ends as: a `TickResult` or a `DropRecord` (frozen dataclasses, plain numpy arrays).

Every frame set that enters the runtime ends as exactly one of the two. Both carry the set's
header (schema.messages.FrameHeader: frame id, scene, timestamp, sample token, the timings of the
stages passed), declared once and flat in JSON, and both serialise to one JSON line (`to_json`) and back (`from_json`) for ticks.jsonl.

Box layout (as perception/structures.py): (N, 9) float32 = x, y, z, w, l, h, yaw, vx, vy in the
frame named by `DetectionArrays.frame` ('ego': x forward, y left; 'global': the scene's map frame).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np

from schema.attributes import attribute_names
from schema.messages import FrameHeader, Pose, StageTiming

DROP_REASONS: tuple[str, ...] = (
    "overload",  # live: no capacity, the oldest waiting work was dropped
    "late_camera",  # too few cameras present/in time to run the tick
    "bad_input",  # NaN pose, image of wrong shape/dtype, unknown channel, bad calibration
    "actor_restart",  # the actor running the tick died; Ray restarted it
    "error",  # the tick raised inside a stage (the message says what)
)


@dataclass(frozen=True)
class DetectionArrays:
    """Detections of one tick in one frame, as same-length plain arrays."""

    frame: str  # 'ego' or 'global'
    boxes: np.ndarray  # (N, 9) float32: x, y, z, w, l, h, yaw, vx, vy
    scores: np.ndarray  # (N,) float32
    labels: np.ndarray  # (N,) int64, index into schema.classes.DETECTION_NAMES
    names: tuple[str, ...]  # (N,) class names
    # (N,) nuScenes attribute per box ('' for classes without); None: named from speed by the default
    # thresholds (schema.attributes); the runtime passes those fitted for its weights
    attributes: tuple[str, ...] | None = None
    track_ids: np.ndarray | None = None  # (N,) int64: each box's track within the stream; None: no tracker

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 9)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float32).reshape(-1))
        object.__setattr__(self, "labels", np.asarray(self.labels, dtype=np.int64).reshape(-1))
        object.__setattr__(self, "names", tuple(self.names))
        if self.attributes is None:
            object.__setattr__(self, "attributes", attribute_names(self.names, boxes[:, 7:9]))
        object.__setattr__(self, "attributes", tuple(self.attributes))
        n = len(boxes)
        if self.track_ids is not None:
            object.__setattr__(self, "track_ids", np.asarray(self.track_ids, dtype=np.int64).reshape(-1))
            if len(self.track_ids) != n:
                raise ValueError(f"DetectionArrays: boxes {n}, track_ids {len(self.track_ids)} differ")
        if not (len(self.scores) == len(self.labels) == len(self.names) == len(self.attributes) == n):
            raise ValueError(f"DetectionArrays: boxes {n}, scores {len(self.scores)}, labels {len(self.labels)}, "
                             f"names {len(self.names)}, attributes {len(self.attributes)} differ")
        if self.frame not in ("ego", "global"):
            raise ValueError(f"DetectionArrays: frame must be 'ego' or 'global', got {self.frame!r}")

    def __len__(self) -> int:
        return len(self.boxes)

    def __reduce__(self):
        # Class names and attributes as a small vocabulary + one index array each: pickled one by one, a
        # tick's hundreds of strings cost more than its arrays (Ray's serialiser visits every object)
        names, attributes = _vocabulary(self.names), _vocabulary(self.attributes)
        return _detections_from_packed, (self.frame, self.boxes, self.scores, self.labels, names, attributes, self.track_ids)

    @classmethod
    def empty(cls, frame: str = "ego") -> "DetectionArrays":
        return cls(frame, np.zeros((0, 9), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), ())

    def to_global(self, ego_to_global: Pose) -> "DetectionArrays":
        """Ego -> global: centres by the pose, yaw by the pose's rotation, velocities rotated."""
        if self.frame != "ego":
            raise ValueError("to_global needs ego-frame detections")
        b = self.boxes.astype(np.float64)
        out = b.copy()
        out[:, 0:3] = ego_to_global.transform_points(b[:, 0:3])
        r = ego_to_global.rotation.rotation_matrix  # (3, 3)
        # yaw of R_pose @ Rz(yaw): the heading of the box's x axis in the global frame, as the devkit's
        # quaternion_yaw defines it, for every box at once
        heading = np.stack([np.cos(b[:, 6]), np.sin(b[:, 6]), np.zeros(len(b))], axis=1) @ r.T  # (N, 3)
        out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
        vel = np.concatenate([b[:, 7:9], np.zeros((len(b), 1))], axis=1)
        out[:, 7:9] = (vel @ r.T)[:, :2]
        return DetectionArrays("global", out.astype(np.float32), self.scores, self.labels, self.names, self.attributes,
                               self.track_ids)

    def to_json(self) -> dict:
        return {
            "frame": self.frame,
            "boxes": np.round(self.boxes, 4).tolist(),
            "scores": np.round(self.scores, 5).tolist(),
            "labels": self.labels.tolist(),
            "names": list(self.names),
            "attributes": list(self.attributes),
            "track_ids": None if self.track_ids is None else self.track_ids.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict) -> "DetectionArrays":
        return cls(d["frame"], np.asarray(d["boxes"], np.float32).reshape(-1, 9), d["scores"], d["labels"], d["names"],
                   d.get("attributes"), d.get("track_ids"))


def _vocabulary(items: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """Strings -> (their distinct values, (N,) int index of each item into them)."""
    lookup: dict[str, int] = {}
    index = [lookup.setdefault(x, len(lookup)) for x in items]
    return tuple(lookup), np.array(index, np.int64)


def _from_vocabulary(packed: tuple[tuple[str, ...], np.ndarray]) -> tuple[str, ...]:
    vocab, index = packed
    return tuple(np.asarray(vocab + ("",), dtype=object)[index].tolist())


def _detections_from_packed(frame, boxes, scores, labels, names, attributes, track_ids) -> "DetectionArrays":
    return DetectionArrays(frame, boxes, scores, labels, _from_vocabulary(names), _from_vocabulary(attributes), track_ids)


def _pack_polylines(lines: Sequence["Polyline"]) -> tuple:
    """Polylines -> (classes vocabulary + index, (L,) int64 point counts, (sum K, 2) float32 points): three arrays
    for any number of lines."""
    counts = np.array([len(p.points) for p in lines], np.int64)
    points = np.concatenate([p.points for p in lines]) if lines else np.zeros((0, 2), np.float32)
    return _vocabulary([p.cls for p in lines]), counts, points


def _unpack_polylines(packed: tuple) -> tuple["Polyline", ...]:
    """_pack_polylines' arrays -> the polylines: each a slice of one writable copy of the points (checked once,
    so no per-line __post_init__)."""
    classes, counts, points = packed
    points = np.array(points, np.float32).reshape(-1, 2)
    ends = np.cumsum(counts).tolist()
    lines = []
    for cls, start, end in zip(_from_vocabulary(classes), [0] + ends[:-1], ends):
        line = object.__new__(Polyline)
        object.__setattr__(line, "cls", cls)
        object.__setattr__(line, "points", points[start:end])
        lines.append(line)
    return tuple(lines)


def _tick_result_from_packed(state: dict) -> "TickResult":
    state["polylines_ego"] = _unpack_polylines(state["polylines_ego"])
    state["polylines_global"] = _unpack_polylines(state["polylines_global"])
    return TickResult(**state)


def _polyline_from_bytes(cls: str, data: bytes) -> "Polyline":
    return Polyline(cls, np.frombuffer(data, np.float32).reshape(-1, 2).copy())


@dataclass(frozen=True)
class Polyline:
    """One road-geometry polyline (ordered points), class from schema.classes.ROAD_CLASSES."""

    cls: str  # 'lane_divider' or 'road_edge'
    points: np.ndarray  # (K, 2) float32 x, y in the ego or global frame

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", np.asarray(self.points, dtype=np.float32).reshape(-1, 2))

    def __reduce__(self):
        # Its points as raw bytes: a result holds dozens of polylines, and pickling each as a numpy array
        # costs ~10 us apiece (most of a TickResult's serialisation between actor and driver)
        return _polyline_from_bytes, (self.cls, self.points.tobytes())

    def to_global(self, ego_to_global: Pose) -> "Polyline":
        p = np.concatenate([self.points.astype(np.float64), np.zeros((len(self.points), 1))], axis=1)
        return Polyline(self.cls, ego_to_global.transform_points(p)[:, :2])

    def to_json(self) -> dict:
        return {"cls": self.cls, "points": np.round(self.points, 3).tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "Polyline":
        return cls(d["cls"], np.asarray(d["points"], np.float32))


@dataclass(frozen=True)
class TickResult(FrameHeader):
    """The output of one tick: detections, road polylines, per-camera segmentation (header: FrameHeader)."""

    oldest_timestamp_us: int  # earliest camera timestamp: end-to-end latency is measured from it
    ego_to_global: Pose
    detections_ego: DetectionArrays
    detections_global: DetectionArrays
    polylines_ego: tuple[Polyline, ...]
    polylines_global: tuple[Polyline, ...]
    seg_channels: tuple[str, ...]  # cameras of `seg`, in CAMERA_CHANNELS order
    seg: np.ndarray  # (Ncam_present, h, w) uint8 label maps (schema.classes.SEG_CLASSES), model resolution
    missing: tuple[str, ...]  # cameras absent or late in this tick's frame set
    new_scene: bool = False  # the temporal state was reset before this tick
    valid: bool = True  # the model ran on this tick's inputs

    kind = "tick"

    def __reduce__(self):
        # Every polyline of both frames packed into three arrays (_pack_polylines): a result crosses from the
        # actor to the driver and on to the sink, and per-object pickling was most of its serialisation
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["polylines_ego"] = _pack_polylines(self.polylines_ego)
        state["polylines_global"] = _pack_polylines(self.polylines_global)
        return _tick_result_from_packed, (state,)

    @property
    def degraded(self) -> bool:
        return bool(self.missing)

    @property
    def latency_ms(self) -> float:
        """Work latency: reading the set ('ingest') plus entering the pipeline ('submit') to the result
        ('deliver'). Time a replay set spent waiting for a free slot (backpressure) is not in it; for
        live sources `end_to_end_ms` counts everything from the sensor."""
        if not self.timings:
            return float("nan")
        by = {t.stage: t for t in self.timings}
        end = max(t.end_ns for t in self.timings)
        if "submit" in by:
            ingest = by["ingest"].end_ns - by["ingest"].start_ns if "ingest" in by else 0
            return (end - by["submit"].start_ns + ingest) / 1e6
        return (end - min(t.start_ns for t in self.timings)) / 1e6

    @property
    def end_to_end_ms(self) -> float:
        """Oldest camera timestamp to the last stage's end; meaningful when sensor time is wall time (live)."""
        if not self.timings:
            return float("nan")
        return (max(t.end_ns for t in self.timings) / 1e3 - self.oldest_timestamp_us) / 1e3

    def to_json(self, include_seg: bool = False) -> dict[str, Any]:
        d = {
            "kind": self.kind,
            **self.header_json(),
            "oldest_timestamp_us": self.oldest_timestamp_us,
            "ego_to_global": self.ego_to_global.to_record(),
            "valid": self.valid,
            "degraded": self.degraded,
            "missing": list(self.missing),
            "new_scene": self.new_scene,
            "detections_ego": self.detections_ego.to_json(),
            "detections_global": self.detections_global.to_json(),
            "polylines_ego": [p.to_json() for p in self.polylines_ego],
            "polylines_global": [p.to_json() for p in self.polylines_global],
            "seg_channels": list(self.seg_channels),
            "seg_shape": list(self.seg.shape),
        }
        if include_seg:
            d["seg"] = self.seg.tolist()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TickResult":
        seg = np.asarray(d["seg"], np.uint8) if "seg" in d else np.zeros([0] + list(d["seg_shape"][1:]), np.uint8)
        return cls(
            **cls.header_from_json(d),
            oldest_timestamp_us=int(d["oldest_timestamp_us"]),
            ego_to_global=Pose.from_record(d["ego_to_global"]),
            detections_ego=DetectionArrays.from_json(d["detections_ego"]),
            detections_global=DetectionArrays.from_json(d["detections_global"]),
            polylines_ego=tuple(Polyline.from_json(p) for p in d["polylines_ego"]),
            polylines_global=tuple(Polyline.from_json(p) for p in d["polylines_global"]),
            seg_channels=tuple(d["seg_channels"]),
            seg=seg,
            missing=tuple(d["missing"]),
            new_scene=bool(d["new_scene"]),
            valid=bool(d["valid"]),
        )


@dataclass(frozen=True)
class DropRecord(FrameHeader):
    """A frame set that did not become a tick result, and why (header: FrameHeader)."""

    reason: str  # one of DROP_REASONS
    detail: str = ""
    missing: tuple[str, ...] = ()

    kind = "drop"
    valid = False

    def __post_init__(self) -> None:
        if self.reason not in DROP_REASONS:
            raise ValueError(f"DropRecord: unknown reason {self.reason!r}; expected one of {DROP_REASONS}")

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            **self.header_json(),
            "reason": self.reason,
            "detail": self.detail,
            "missing": list(self.missing),
        }

    @classmethod
    def from_json(cls, d: dict) -> "DropRecord":
        return cls(d["reason"], d["detail"], tuple(d.get("missing", ())), **cls.header_from_json(d))


def record_from_json(d: dict) -> TickResult | DropRecord:
    """One ticks.jsonl line back into its message."""
    return TickResult.from_json(d) if d["kind"] == "tick" else DropRecord.from_json(d)
