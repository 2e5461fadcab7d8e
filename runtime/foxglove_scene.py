"""bevstream's messages as Foxglove messages: pure functions, no I/O, no threads.

`runtime/recording.py` writes what these return into `RUN/run.mcap`. Frames are named as in the
3D panel: `global` (the log's map frame), `ego` (the car), and one frame per camera named by its channel
(`CAM_FRONT`, ...). Boxes are bevstream's (N, 9) layout (schema/results.py): x, y, z (centre), w, l, h, yaw,
vx, vy; a Foxglove cube's size is (x: length, y: width, z: height) in its own pose.
"""
from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from foxglove.messages import (ArrowPrimitive, CameraCalibration, Color, CompressedImage, CubePrimitive,
                               FrameTransform, FrameTransforms, LinePrimitive, LinePrimitiveLineType, Point3, Pose,
                               Quaternion, SceneEntity, SceneUpdate, TextPrimitive, Timestamp, Vector3)
from PIL import Image

from schema.classes import SEG_CLASSES
from schema.messages import CameraFrame, Pose as SchemaPose
from schema.results import DetectionArrays, DropRecord, Polyline, TickResult

GLOBAL_FRAME, EGO_FRAME = "global", "ego"
# One colour per detection class (DETECTION_NAMES order), RGB 0-255: the colours of lab/viz.py's pictures.
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 158, 0), (255, 99, 71), (255, 69, 0), (233, 150, 70), (255, 215, 0),
    (0, 0, 230), (255, 61, 99), (220, 20, 60), (47, 79, 79), (112, 128, 144))
ROAD_COLOURS = {"lane_divider": (255, 255, 255), "road_edge": (0, 200, 255)}
GT_COLOUR = (80, 255, 120)  # ground truth: green wireframes, so it never looks like a detection
VELOCITY_COLOUR = (180, 255, 180)
MIN_ARROW_SPEED_MPS = 0.5  # slower boxes get no velocity arrow (as in lab/viz.py)
# (12, 2) corner index pairs of a box's edges; corners as `box_corners` orders them.
_EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7))
# Per-pixel class colours of the segmentation images (SEG_CLASSES order).
SEG_COLOURS = np.array([(0, 0, 0), (70, 130, 180), (128, 64, 128), (255, 255, 255), (0, 200, 255), (244, 35, 232),
                        (70, 70, 70), (0, 0, 142), (220, 20, 60), (119, 11, 32), (250, 170, 30)], np.uint8)
assert len(SEG_COLOURS) == len(SEG_CLASSES)


def stamp(timestamp_us: int) -> Timestamp:
    """Integer microseconds (the log's clock) -> a Foxglove Timestamp."""
    return Timestamp(int(timestamp_us // 1_000_000), int(timestamp_us % 1_000_000) * 1000)


def _colour(rgb: Sequence[int], alpha: float = 1.0) -> Color:
    return Color(r=rgb[0] / 255, g=rgb[1] / 255, b=rgb[2] / 255, a=alpha)


def _yaw_quat(yaw: float) -> Quaternion:
    return Quaternion(x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2))


def _pose(x: float, y: float, z: float, yaw: float = 0.0) -> Pose:
    return Pose(position=Vector3(x=float(x), y=float(y), z=float(z)), orientation=_yaw_quat(float(yaw)))


def transform(pose: SchemaPose, parent: str, child: str, timestamp_us: int) -> FrameTransform:
    """A schema Pose (child -> parent, as nuScenes) as a FrameTransform of `child` within `parent`."""
    t, q = pose.translation, pose.rotation
    return FrameTransform(timestamp=stamp(timestamp_us), parent_frame_id=parent, child_frame_id=child,
                          translation=Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                          rotation=Quaternion(x=float(q.x), y=float(q.y), z=float(q.z), w=float(q.w)))


def camera_transforms(frame: CameraFrame) -> FrameTransforms:
    """global -> ego (the ego pose at this camera's exposure) and ego -> the camera, at the camera's timestamp."""
    return FrameTransforms(transforms=[transform(frame.ego_to_global, GLOBAL_FRAME, EGO_FRAME, frame.timestamp_us),
                                       transform(frame.sensor_to_ego, EGO_FRAME, frame.channel, frame.timestamp_us)])


def jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def camera_image_of(channel: str, timestamp_us: int, data: bytes, fmt: str = "jpeg") -> CompressedImage:
    """Compressed image bytes of a camera (its frame is named by its channel) at a sensor time."""
    return CompressedImage(timestamp=stamp(timestamp_us), frame_id=channel, data=data, format=fmt)


def camera_image(frame: CameraFrame, data: bytes, fmt: str = "jpeg") -> CompressedImage:
    return camera_image_of(frame.channel, frame.timestamp_us, data, fmt)


def calibration(frame: CameraFrame, width: int, height: int) -> CameraCalibration:
    """The camera's pinhole model for an image of (width, height): the frame's intrinsic is for its own image,
    so it is scaled when the recorded image has another size (the original JPEG of a scaled decode)."""
    k = np.asarray(frame.intrinsic, np.float64).copy()
    w0, h0 = frame.size
    k[0] *= width / w0
    k[1] *= height / h0
    p = np.concatenate([k, np.zeros((3, 1))], axis=1)
    return CameraCalibration(timestamp=stamp(frame.timestamp_us), frame_id=frame.channel, width=int(width),
                             height=int(height), distortion_model="plumb_bob", D=[0.0] * 5,
                             K=k.reshape(-1).tolist(), R=np.eye(3).reshape(-1).tolist(), P=p.reshape(-1).tolist())


def segmentation_png(labels: np.ndarray) -> bytes:
    """(h, w) uint8 class labels (SEG_CLASSES) -> a colour PNG, for an Image panel beside the camera."""
    buf = io.BytesIO()
    Image.fromarray(SEG_COLOURS[np.clip(labels, 0, len(SEG_COLOURS) - 1)]).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def box_corners(box: np.ndarray) -> np.ndarray:
    """(9,) box -> (8, 3) corners: the top face (+z) then the bottom face, each front-left first, anticlockwise."""
    x, y, z, w, l, h, yaw = (float(v) for v in box[:7])
    dx = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * l / 2
    dy = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * w / 2
    dz = np.array([1, 1, 1, 1, -1, -1, -1, -1]) * h / 2
    c, s = math.cos(yaw), math.sin(yaw)
    return np.stack([x + c * dx - s * dy, y + s * dx + c * dy, z + dz], axis=1)


def detections_entity(dets: DetectionArrays, frame_id: str, timestamp_us: int, min_score: float) -> SceneEntity:
    """The tick's boxes: a translucent cube per box coloured by class, a text with class, score and track id,
    and an arrow along the velocity (length: where the box is in one second)."""
    cubes, texts, arrows = [], [], []
    for i in np.flatnonzero(dets.scores >= min_score):
        box, label = dets.boxes[i], int(dets.labels[i])
        rgb = CLASS_COLOURS[label % len(CLASS_COLOURS)]
        x, y, z, w, l, h, yaw = (float(v) for v in box[:7])
        cubes.append(CubePrimitive(pose=_pose(x, y, z, yaw), size=Vector3(x=l, y=w, z=h), color=_colour(rgb, 0.45)))
        track = "" if dets.track_ids is None else f" #{int(dets.track_ids[i])}"
        texts.append(TextPrimitive(pose=_pose(x, y, z + h / 2 + 0.6), billboard=True, font_size=12.0,
                                   scale_invariant=True, color=_colour(rgb), text=f"{dets.names[i]} {dets.scores[i]:.2f}{track}"))
        speed = float(np.hypot(box[7], box[8]))
        if speed >= MIN_ARROW_SPEED_MPS:
            arrows.append(ArrowPrimitive(pose=_pose(x, y, z, math.atan2(box[8], box[7])), shaft_length=speed * 0.8,
                                         shaft_diameter=0.15, head_length=speed * 0.2 + 0.2, head_diameter=0.5,
                                         color=_colour(VELOCITY_COLOUR)))
    return SceneEntity(timestamp=stamp(timestamp_us), frame_id=frame_id, id="detections", cubes=cubes, texts=texts,
                       arrows=arrows)


def road_entity(lines: Sequence[Polyline], frame_id: str, timestamp_us: int, entity_id: str = "road") -> SceneEntity:
    """Road polylines as line strips on the ground, coloured by class."""
    prims = [LinePrimitive(type=LinePrimitiveLineType.LineStrip, thickness=0.2, scale_invariant=False,
                           points=[Point3(x=float(px), y=float(py), z=0.0) for px, py in line.points],
                           color=_colour(ROAD_COLOURS.get(line.cls, (200, 200, 200))))
             for line in lines if len(line.points) >= 2]
    return SceneEntity(timestamp=stamp(timestamp_us), frame_id=frame_id, id=entity_id, lines=prims)


def scene_update(result: TickResult, min_score: float) -> SceneUpdate:
    """One tick in the 3D panel: its boxes and road lines, in the ego frame at the tick's sensor time. Entities
    keep their ids from tick to tick, so each update replaces the last."""
    return SceneUpdate(entities=[
        detections_entity(result.detections_ego, EGO_FRAME, result.timestamp_us, min_score),
        road_entity(result.polylines_ego, EGO_FRAME, result.timestamp_us)])


def ground_truth_update(boxes: np.ndarray, names: Sequence[str], timestamp_us: int) -> SceneUpdate:
    """Annotated boxes ((N, 9), global frame) as green wireframes with their class name: another style than the
    detections' filled cubes, so both can be shown at once."""
    points = []
    for box in boxes:
        corners = box_corners(box)
        for a, b in _EDGES:
            points += [Point3(x=float(corners[a, 0]), y=float(corners[a, 1]), z=float(corners[a, 2])),
                       Point3(x=float(corners[b, 0]), y=float(corners[b, 1]), z=float(corners[b, 2]))]
    lines = [LinePrimitive(type=LinePrimitiveLineType.LineList, thickness=2.0, scale_invariant=True, points=points,
                           color=_colour(GT_COLOUR))] if points else []
    texts = [TextPrimitive(pose=_pose(b[0], b[1], b[2] - b[5] / 2 - 0.3), billboard=True, font_size=10.0,
                           scale_invariant=True, color=_colour(GT_COLOUR), text=f"gt {n}") for b, n in zip(boxes, names)]
    return SceneUpdate(entities=[SceneEntity(timestamp=stamp(timestamp_us), frame_id=GLOBAL_FRAME, id="ground_truth",
                                             lines=lines, texts=texts)])


# The JSON schema of the /timing topic: one message per frame set, tick or drop, for a Plot panel.
TIMING_SCHEMA = {
    "type": "object",
    "title": "bevstream.Timing",
    "properties": {
        "frame_id": {"type": "integer"},
        "kind": {"type": "string", "description": "tick or drop"},
        "latency_ms": {"type": "number", "description": "work latency (TickResult.latency_ms); 0 for a drop"},
        "stage_ms": {"type": "object", "additionalProperties": {"type": "number"},
                     "description": "each stage the set passed, milliseconds"},
        "detections": {"type": "integer"},
        "degraded": {"type": "boolean"},
        "dropped": {"type": "integer", "description": "1 for a drop, else 0"},
        "dropped_total": {"type": "integer", "description": "drops so far in this run"},
        "reason": {"type": "string", "description": "a drop's reason (schema.results.DROP_REASONS)"},
    },
}


def timing_message(record: TickResult | DropRecord, dropped_total: int) -> dict:
    """The /timing message of one frame set: stage durations, latency, and drops so far."""
    stage_ms = {t.stage: round(t.duration_ms, 3) for t in record.timings}
    msg = {"frame_id": int(record.frame_id), "kind": record.kind, "stage_ms": stage_ms, "dropped_total": dropped_total}
    if isinstance(record, DropRecord):
        msg.update(latency_ms=0.0, detections=0, degraded=True, dropped=1, reason=record.reason)
    else:
        latency = record.latency_ms
        msg.update(latency_ms=round(latency, 3) if math.isfinite(latency) else 0.0, detections=len(record.detections_ego),
                   degraded=record.degraded, dropped=0, reason="")
    return msg
