"""How much of each box the cameras see, measured on the rendered label images.

nuScenes' visibility is "the fraction of the object visible in all six images". Here the
projected box (the convex hull of its eight corners, which is the rendered silhouette of a
cuboid) is rasterised in each camera and we count the pixels inside it that the label image marks
with the object's class; visible fraction = sum over cameras of those pixels / sum of the hull's
area inside each image. An occluder of the same class counts as visible (a documented
approximation: the label image has classes, not instances).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import cv2
import numpy as np
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import view_points

from perception.classes import DETECTION_TO_SEG, SEG_INDEX

MIN_DEPTH_M = 0.1  # a camera counts only if all eight corners lie in front of it


def seg_label_of(detection_name: str) -> int:
    """Label-image value that an object of this detection class paints."""
    try:
        return SEG_INDEX[DETECTION_TO_SEG[detection_name]]
    except KeyError:
        raise ValueError(f"unknown detection name {detection_name!r}") from None


def box_in_camera(agent: Any, ego_to_global: Any, camera: Any) -> Box:
    """The agent's box (global frame) moved into the camera frame, as the devkit does it."""
    box = Box(np.asarray(agent.center, dtype=np.float64), np.asarray(agent.size, dtype=np.float64), agent.rotation)
    box.translate(-ego_to_global.translation)
    box.rotate(ego_to_global.rotation.inverse)
    box.translate(-camera.sensor_to_ego.translation)
    box.rotate(camera.sensor_to_ego.rotation.inverse)
    return box


def projected_pixels(box_cam: Box, intrinsic: np.ndarray, labels: np.ndarray, label_value: int) -> tuple[int, int]:
    """(pixels of `label_value` inside the projected box, area of the projected box in the image).

    (0, 0) when a corner is behind the camera (near-plane clipping is not attempted) or the box
    projects outside the image.
    """
    corners = box_cam.corners()  # (3, 8)
    if np.any(corners[2] < MIN_DEPTH_M):
        return 0, 0
    uv = view_points(corners, intrinsic, normalize=True)[:2].T  # (8, 2)
    h, w = labels.shape
    x0, y0 = np.floor(uv.min(axis=0)).astype(int)
    x1, y1 = np.ceil(uv.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    if x1 < x0 or y1 < y0:
        return 0, 0
    hull = cv2.convexHull(np.round(uv - [x0, y0]).astype(np.int32))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    inside = mask.astype(bool)
    area = int(inside.sum())
    visible = int(np.count_nonzero(labels[y0 : y1 + 1, x0 : x1 + 1][inside] == label_value))
    return visible, area


class VisibilityAccumulator:
    """Sums visible and projected pixels per instance over the cameras of one keyframe."""

    def __init__(self) -> None:
        self.visible: dict[str, int] = {}
        self.area: dict[str, int] = {}

    def add_camera(self, agents: Iterable[Any], ego_to_global: Any, camera: Any, labels: np.ndarray) -> None:
        """Measure every agent in one camera image (agents, pose and labels at that image's time)."""
        if labels.shape != (camera.height, camera.width):
            raise ValueError(f"label image {labels.shape} does not match camera {camera.channel} "
                             f"({camera.height}, {camera.width})")
        for agent in agents:
            box = box_in_camera(agent, ego_to_global, camera)
            vis, area = projected_pixels(box, camera.intrinsic, labels, seg_label_of(agent.detection_name))
            self.visible[agent.instance_id] = self.visible.get(agent.instance_id, 0) + vis
            self.area[agent.instance_id] = self.area.get(agent.instance_id, 0) + area

    def fractions(self) -> Mapping[str, float]:
        """instance_id -> visible fraction in [0, 1] (0 for boxes no camera sees)."""
        return {k: (self.visible[k] / self.area[k] if self.area[k] else 0.0) for k in sorted(self.area)}
