"""How much of each box the cameras see, measured on the rendered label images.

nuScenes' visibility is "the fraction of the object visible in all six images". Here the
projected box (the convex hull of its eight corners, which is the rendered silhouette of a
cuboid) is rasterised in each camera and we count the pixels inside it that the label image marks
with the object's class; visible fraction = sum over cameras of those pixels / sum of the hull's
area inside each image, divided by the class's fill factor: the share of its box hull that an
unoccluded object of that class covers (a pedestrian or a cone fills far less of its box than a
car). `fill_factors` measures it once per export by rendering each class alone. The label
image has classes, not instances, so boxes are visited near to far and a class pixel counts for
the nearest box whose hull covers it only: a car behind a car is occluded, not visible.

The corners are computed for all boxes at once in numpy with the devkit's corner order and
transforms (tests compare them with nuscenes Box.corners + view_points); the devkit itself is not
imported here because worker processes would pay its multi-second import.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
from pyquaternion import Quaternion

from schema.classes import DETECTION_TO_SEG, SEG_INDEX

MIN_DEPTH_M = 0.1  # a camera counts only if all eight corners lie in front of it

# Unit-box corner signs in the devkit's order (nuscenes.utils.data_classes.Box.corners):
# x along the length, y along the width, z along the height.
_CORNER_SIGNS = np.array(
    [[1, 1, 1, 1, -1, -1, -1, -1], [1, -1, -1, 1, 1, -1, -1, 1], [1, 1, -1, -1, 1, 1, -1, -1]], dtype=np.float64
)  # (3, 8)


def seg_label_of(detection_name: str) -> int:
    """Label-image value that an object of this detection class paints."""
    try:
        return SEG_INDEX[DETECTION_TO_SEG[detection_name]]
    except KeyError:
        raise ValueError(f"unknown detection name {detection_name!r}") from None


def box_corners_global(agents: Sequence[Any]) -> np.ndarray:
    """(N, 8, 3) corners of the agents' boxes in the global frame, in the devkit's order."""
    if not agents:
        return np.zeros((0, 8, 3))
    size = np.array([a.size for a in agents], dtype=np.float64)  # (N, 3) w, l, h
    half = np.stack([size[:, 1], size[:, 0], size[:, 2]], axis=1)[:, :, None] / 2  # (N, 3, 1) l, w, h
    local = half * _CORNER_SIGNS[None]  # (N, 3, 8)
    rot = np.array([a.rotation.rotation_matrix for a in agents])  # (N, 3, 3)
    center = np.array([a.center for a in agents], dtype=np.float64)  # (N, 3)
    return np.einsum("nij,njk->nki", rot, local) + center[:, None, :]


def corners_in_camera(corners_global: np.ndarray, ego_to_global: Any, camera: Any) -> np.ndarray:
    """(N, 8, 3) global corners -> the camera frame (global -> ego -> sensor, as get_sample_data)."""
    r_e = ego_to_global.rotation.rotation_matrix
    r_c = camera.sensor_to_ego.rotation.rotation_matrix
    ego = (corners_global - ego_to_global.translation) @ r_e  # row vectors: R^T p
    return (ego - camera.sensor_to_ego.translation) @ r_c


def projected_pixels(corners_cam: np.ndarray, intrinsic: np.ndarray, labels: np.ndarray, label_value: int,
                     claimed: np.ndarray | None = None) -> tuple[int, int]:
    """(pixels of `label_value` inside one projected box, area of the projected box in the image).

    `corners_cam` is (8, 3) in the camera frame. (0, 0) when a corner is behind the camera
    (near-plane clipping is not attempted) or the box projects outside the image. With `claimed`
    (an (H, W) bool image), pixels already claimed by a nearer box do not count as visible, and
    the pixels counted here are claimed in turn.
    """
    if np.any(corners_cam[:, 2] < MIN_DEPTH_M):
        return 0, 0
    uvw = corners_cam @ np.asarray(intrinsic, dtype=np.float64).T
    uv = uvw[:, :2] / uvw[:, 2:3]  # (8, 2)
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
    mine = inside & (labels[y0 : y1 + 1, x0 : x1 + 1] == label_value)
    if claimed is not None:
        window = claimed[y0 : y1 + 1, x0 : x1 + 1]
        mine &= ~window
        window |= mine
    return int(np.count_nonzero(mine)), area


def fill_key(agent: Any) -> tuple[str, bool]:
    """What decides an object's silhouette: its class, and for cycles whether a rider sits on it."""
    return agent.detection_name, agent.attribute == "cycle.without_rider"


def fill_factors(render_one: Callable[[Any], np.ndarray], prototypes: Sequence[Any], ego_to_global: Any,
                 camera: Any, distance_m: float = 12.0,
                 yaws: Sequence[float] = (0.0, np.pi / 4, np.pi / 2)) -> dict[tuple[str, bool], float]:
    """Share of the projected box hull that each prototype's rendered silhouette covers.

    `render_one(agent)` renders a world holding only `agent` in `camera` and returns the label
    image; each prototype (an agent of one fill_key) is placed `distance_m` ahead of the camera
    at each of `yaws` (relative to the ego heading), and the median share is kept, clamped to
    [0.2, 1].
    """
    out: dict[tuple[str, bool], float] = {}
    for proto in prototypes:
        shares = []
        for yaw in yaws:
            ahead = ego_to_global.transform_points(np.array([[distance_m, 0.0, 0.0]]))[0]
            rot = ego_to_global.rotation * Quaternion(axis=[0.0, 0.0, 1.0], angle=float(yaw))
            agent = replace(proto, center=np.array([ahead[0], ahead[1], proto.size[2] / 2]), rotation=rot)
            labels = render_one(agent)
            corners = corners_in_camera(box_corners_global([agent]), ego_to_global, camera)[0]
            vis, area = projected_pixels(corners, camera.intrinsic, labels, seg_label_of(agent.detection_name))
            if area > 0:
                shares.append(vis / area)
        out[fill_key(proto)] = float(np.clip(np.median(shares), 0.2, 1.0)) if shares else 1.0
    return out


class VisibilityAccumulator:
    """Sums visible and projected pixels per instance over the cameras of one keyframe."""

    def __init__(self, fill: Mapping[tuple[str, bool], float] | None = None) -> None:
        self.fill = dict(fill or {})  # fill_key -> share of the hull a fully visible object covers
        self.visible: dict[str, int] = {}
        self.area: dict[str, int] = {}
        self.keys: dict[str, tuple[str, bool]] = {}

    def add_camera(self, agents: Sequence[Any], ego_to_global: Any, camera: Any, labels: np.ndarray) -> None:
        """Measure every agent in one camera image (agents, pose and labels at that image's time)."""
        if labels.shape != (camera.height, camera.width):
            raise ValueError(f"label image {labels.shape} does not match camera {camera.channel} "
                             f"({camera.height}, {camera.width})")
        agents = list(agents)
        cam = corners_in_camera(box_corners_global(agents), ego_to_global, camera)  # (N, 8, 3)
        claimed = np.zeros(labels.shape, dtype=bool)  # class pixels already given to a nearer box
        for i in np.argsort(cam[:, :, 2].mean(axis=1), kind="stable") if len(agents) else []:
            agent = agents[i]
            vis, area = projected_pixels(cam[i], camera.intrinsic, labels, seg_label_of(agent.detection_name), claimed)
            self.visible[agent.instance_id] = self.visible.get(agent.instance_id, 0) + vis
            self.area[agent.instance_id] = self.area.get(agent.instance_id, 0) + area
            self.keys[agent.instance_id] = fill_key(agent)

    def fractions(self) -> Mapping[str, float]:
        """instance_id -> visible fraction in [0, 1] (0 for boxes no camera sees)."""
        out = {}
        for k in sorted(self.area):
            expected = self.area[k] * self.fill.get(self.keys[k], 1.0)
            out[k] = min(1.0, self.visible[k] / expected) if expected > 0 else 0.0
        return out
