"""Pictures of a tick (PIL only): camera images with projected 3D boxes, and the BEV with boxes and
road polylines. Small on purpose: for the demo and for looking at what the model saw."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from pyquaternion import Quaternion

from runtime.foxglove_scene import CLASS_COLOURS as _PALETTE
from runtime.foxglove_scene import ROAD_COLOURS as _ROAD_COLOURS
from runtime.foxglove_scene import SEG_COLOURS
from schema.classes import DETECTION_NAMES
from schema.messages import CAMERA_CHANNELS, FrameSet
from schema.results import TickResult

# (the colours are those of the Foxglove recording, so a picture and the recording of a run agree)
SEG_ALPHA = 0.4  # weight of the segmentation colours over the camera image
# (12, 2) corner index pairs of a box's edges, corners in the devkit's Box.corners() order.
_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]


def box_corners_ego(box: np.ndarray) -> np.ndarray:
    """(9,) x, y, z, w, l, h, yaw, vx, vy -> (3, 8) corners via the devkit's Box (centre at z)."""
    from nuscenes.utils.data_classes import Box

    return Box(box[:3].tolist(), box[3:6].tolist(), Quaternion(axis=[0, 0, 1], angle=float(box[6]))).corners()


# Boxes scoring below this are not drawn (the run's files keep them all: the evaluation ranks by score).
DRAW_MIN_SCORE = 0.3
# In the BEV, a box moving at least this fast gets an arrow to where its velocity takes it in ARROW_SECONDS.
MIN_ARROW_SPEED_MPS = 0.5
ARROW_SECONDS = 1.0
_VELOCITY_COLOUR = (180, 255, 180)


def _drawn_boxes(result: TickResult, min_score: float):
    """(box (9,), label) pairs of the tick's ego-frame detections worth drawing."""
    dets = result.detections_ego
    return [(box, label) for box, label, score in zip(dets.boxes, dets.labels, dets.scores) if score >= min_score]


def overlay_segmentation(img: Image.Image, labels: np.ndarray, alpha: float = SEG_ALPHA) -> Image.Image:
    """The camera image with its (h, w) class label map (schema.classes.SEG_CLASSES), coloured and stretched to the
    image, blended over it; background (label 0) is left as it is."""
    colours = Image.fromarray(SEG_COLOURS[np.clip(labels, 0, len(SEG_COLOURS) - 1)]).resize(img.size, Image.NEAREST)
    mask = Image.fromarray(((labels > 0) * int(255 * alpha)).astype(np.uint8)).resize(img.size, Image.NEAREST)
    return Image.composite(colours, img, mask)


def _seg_of(result: TickResult, channel: str) -> np.ndarray | None:
    """The tick's label map of a camera, where the result carries one (a run's ticks.jsonl does not)."""
    if channel in result.seg_channels and len(result.seg) == len(result.seg_channels):
        labels = result.seg[result.seg_channels.index(channel)]
        return labels if labels.size else None
    return None


def draw_camera(frame_set: FrameSet, channel: str, result: TickResult, width: int = 480,
                min_score: float = DRAW_MIN_SCORE) -> Image.Image:
    """One camera image with the tick's segmentation (where it has one) and its ego-frame boxes projected into it."""
    from nuscenes.utils.geometry_utils import view_points

    cam = frame_set.camera(channel)
    img = Image.fromarray(cam.image).convert("RGB")
    labels = _seg_of(result, channel)
    if labels is not None:
        img = overlay_segmentation(img, labels)
    draw = ImageDraw.Draw(img)
    ego_to_cam = cam.sensor_to_ego.inverse()
    for box, label in _drawn_boxes(result, min_score):
        corners = ego_to_cam.transform_points(box_corners_ego(box).T).T  # (3, 8) camera frame
        if np.any(corners[2] < 0.5):
            continue  # behind (or at) the camera
        uv = view_points(corners, cam.intrinsic, normalize=True)[:2]  # (2, 8)
        for a, b in _EDGES:
            draw.line([tuple(uv[:, a]), tuple(uv[:, b])], fill=_PALETTE[int(label) % 10], width=2)
    draw.text((4, 4), channel, fill=(255, 255, 0))
    scale = width / img.width
    return img.resize((width, max(1, int(img.height * scale))))


def draw_cameras(frame_set: FrameSet, result: TickResult, width: int = 400, min_score: float = DRAW_MIN_SCORE) -> Image.Image:
    """The six cameras in a 2 x 3 grid (front row, back row); absent cameras are left black."""
    tiles = {}
    for ch in CAMERA_CHANNELS:
        if ch in frame_set.channels:
            tiles[ch] = draw_camera(frame_set, ch, result, width, min_score)
    h = max((t.height for t in tiles.values()), default=width // 2)
    canvas = Image.new("RGB", (3 * width, 2 * h))
    layout = ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"]
    for i, ch in enumerate(layout):
        if ch in tiles:
            canvas.paste(tiles[ch], ((i % 3) * width, (i // 3) * h))
    return canvas


def draw_bev(result: TickResult, extent_m: float = 51.2, size: int = 512, min_score: float = DRAW_MIN_SCORE) -> Image.Image:
    """Top view of the ego frame (x up, y left): boxes with heading and velocity (an arrow to where the box will
    be in ARROW_SECONDS), road polylines, the ego car."""
    img = Image.new("RGB", (size, size), (20, 20, 20))
    draw = ImageDraw.Draw(img)
    s = size / (2 * extent_m)

    def px(x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
        return list(zip((size / 2 - y * s).tolist(), (size / 2 - x * s).tolist()))

    for r in (10, 20, 30, 40, 50):  # range rings every 10 m
        draw.ellipse([size / 2 - r * s, size / 2 - r * s, size / 2 + r * s, size / 2 + r * s], outline=(50, 50, 50))
    for line in result.polylines_ego:
        if len(line.points) >= 2:
            draw.line(px(line.points[:, 0], line.points[:, 1]), fill=_ROAD_COLOURS.get(line.cls, (200, 200, 200)), width=2)
    drawn = _drawn_boxes(result, min_score)
    for box, label in drawn:
        c = box_corners_ego(box)[:, [0, 1, 5, 4]]  # bottom-independent footprint: 4 top-view corners
        colour = _PALETTE[int(label) % 10]
        draw.polygon(px(c[0], c[1]), outline=colour)
        head = np.array([box[0], box[1]]) + 0.5 * box[4] * np.array([np.cos(box[6]), np.sin(box[6])])
        draw.line(px(np.array([box[0], head[0]]), np.array([box[1], head[1]])), fill=colour, width=2)
        if np.hypot(box[7], box[8]) >= MIN_ARROW_SPEED_MPS:  # where the box will be in ARROW_SECONDS
            end = box[:2] + ARROW_SECONDS * box[7:9]
            draw.line(px(np.array([box[0], end[0]]), np.array([box[1], end[1]])), fill=_VELOCITY_COLOUR, width=1)
            (ex, ey), = px(end[:1], end[1:])
            draw.ellipse([ex - 2, ey - 2, ex + 2, ey + 2], fill=_VELOCITY_COLOUR)
    draw.polygon(px(np.array([2.4, 2.4, -2.4, -2.4]), np.array([1.0, -1.0, -1.0, 1.0])), outline=(0, 255, 0))
    for i, name in enumerate(DETECTION_NAMES):
        draw.text((4, 4 + 11 * i), name, fill=_PALETTE[i])
    draw.text((4, size - 14), f"frame {result.frame_id}  {len(drawn)} boxes >= {min_score:.2f}  "
                              f"{len(result.polylines_ego)} road lines", fill=(255, 255, 255))
    return img
