"""Ground truth for any frame of a nuScenes-format dataroot, in the ego frame of that frame.

Training and evaluation both need, for a 12 Hz frame set: the 3D boxes of the ten detection classes
(x, y, z, w, l, h, yaw, vx, vy in the ego frame), the road polylines (lane dividers, road edges) and
the per-camera semantic label images. nuScenes annotates only the 2 Hz keyframes; at a sweep the
boxes are interpolated between the surrounding keyframes exactly as the devkit's
`NuScenes.get_boxes` does for a non-keyframe sample_data (the standard way to get 12 Hz ground
truth): instances of the next keyframe that also exist in the previous one are interpolated
(linear translation and size, slerp rotation), the others are taken from the next keyframe as they
are. Velocities are the devkit's `box_velocity` (global frame, interpolated the same way), rotated
into the ego frame; a NaN velocity becomes 0 with `velocity_valid` False.

Road geometry and label images come from the files that replay/layout.py places beside the
dataroot; real nuScenes has neither and the readers return None. A keyframe's LIDAR_TOP returns
(depth targets) are read through the devkit, in the global frame; None where the point file is absent.
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.utils.data_classes import Box
from pyquaternion import Quaternion

from perception.grid import BEVGrid
from replay.layout import label_path, road_geometry_path
from schema.classes import DETECTION_NAMES, ROAD_CLASSES
from schema.messages import FrameSet, Pose

if TYPE_CHECKING:
    from nuscenes.nuscenes import NuScenes

_LABEL_INDEX = {name: i for i, name in enumerate(DETECTION_NAMES)}


@dataclass(frozen=True)
class BoxTargets:
    """The detection ground truth of one frame, in its ego frame."""

    boxes: np.ndarray  # (N, 9) float32: x, y, z, w, l, h, yaw, vx, vy (ego frame; v is absolute, in ego axes)
    labels: np.ndarray  # (N,) int64 index into schema.classes.DETECTION_NAMES
    velocity_valid: np.ndarray  # (N,) bool; False where the devkit gave NaN velocity (stored as 0)
    instance_tokens: tuple[str, ...]  # (N,) nuScenes instance of each box
    attribute_names: tuple[str, ...]  # (N,) first attribute of the annotation ('' where none)
    num_points: np.ndarray  # (N,) int64 lidar + radar points of the annotation (visibility)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls) -> "BoxTargets":
        return cls(np.zeros((0, 9), np.float32), np.zeros(0, np.int64), np.zeros(0, bool), (), (), np.zeros(0, np.int64))


@dataclass(frozen=True)
class FrameGroundTruth:
    """Everything the losses and metrics need for one frame set."""

    boxes: BoxTargets
    road: dict[str, list[np.ndarray]] | None  # ROAD_CLASSES name -> polylines (K, 2) ego x, y; None: no road files
    seg_labels: tuple[np.ndarray | None, ...]  # per camera of the frame set (its order): (H, W) uint8 or None
    lidar_points: np.ndarray | None = None  # (N, 3) float64 global: the keyframe's LIDAR_TOP returns, where asked and present


@dataclass(frozen=True)
class _Ann:
    """One annotation reduced to what interpolation needs (global frame)."""

    instance: str
    label: int
    translation: np.ndarray  # (3,)
    size: np.ndarray  # (3,) w, l, h
    rotation: Quaternion
    velocity: np.ndarray  # (3,) global, may hold NaN
    attribute: str
    num_points: int


def ego_box(center: np.ndarray, size: np.ndarray, rotation: Quaternion, velocity: np.ndarray, ego_to_global: Pose) -> Box:
    """A global-frame box moved into the ego frame with the devkit's Box geometry."""
    box = Box(list(center), list(size), rotation, velocity=tuple(velocity))
    box.translate(-ego_to_global.translation)
    box.rotate(ego_to_global.rotation.inverse)
    return box


def _polyline_in_grid(points_ego: np.ndarray, grid: BEVGrid) -> list[np.ndarray]:
    """Clip an ego-frame polyline (K, 2) to the grid rectangle; may split it into several pieces."""
    from shapely.geometry import LineString, MultiLineString
    from shapely.geometry import box as shp_box

    if len(points_ego) < 2:
        return []
    clipped = LineString(points_ego).intersection(shp_box(grid.x_min, grid.y_min, grid.x_max, grid.y_max))
    if clipped.is_empty:
        return []
    if isinstance(clipped, LineString):
        parts = [clipped]
    elif isinstance(clipped, MultiLineString):
        parts = list(clipped.geoms)
    else:  # GeometryCollection (points where the line only touches the border, plus lines)
        parts = [g for g in getattr(clipped, "geoms", []) if isinstance(g, LineString)]
    return [np.asarray(p.coords, dtype=np.float32)[:, :2] for p in parts if p.length > 0]


def global_to_ego_2d(points: np.ndarray, ego_to_global: Pose) -> np.ndarray:
    """(K, 2) global x, y -> (K, 2) ego x, y, rotating by the ego yaw only (the map is a plane; as in MapTR)."""
    yaw = ego_to_global.yaw
    c, s = np.cos(yaw), np.sin(yaw)
    d = np.asarray(points, dtype=np.float64)[:, :2] - ego_to_global.translation[:2]
    return np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)


class GroundTruth:
    """Ground truth reader over one loaded NuScenes instance.

    `grid` bounds what is returned (box centres and road polylines inside it); `min_points` drops
    annotations with fewer lidar + radar points (the detection evaluation ignores empty boxes, so
    training usually drops them too: min_points=1).
    """

    def __init__(self, nusc: "NuScenes", grid: BEVGrid | None = None, min_points: int = 0) -> None:
        self.nusc = nusc
        self.dataroot = Path(nusc.dataroot)
        self.grid = grid or BEVGrid()
        self.min_points = int(min_points)
        self._scene_by_name = {s["name"]: s for s in nusc.scene}
        self._keyframes: dict[str, tuple[list[int], list[str]]] = {}  # scene token -> (timestamps, sample tokens)
        self._anns: dict[str, dict[str, _Ann]] = {}  # sample token -> instance -> annotation
        self._road: dict[str, dict | None] = {}

    # ---- detection boxes -------------------------------------------------------------------------------

    def _scene_keyframes(self, scene_token: str) -> tuple[list[int], list[str]]:
        if scene_token not in self._keyframes:
            scene = self.nusc.get("scene", scene_token)
            stamps, tokens = [], []
            token = scene["first_sample_token"]
            while token:
                sample = self.nusc.get("sample", token)
                stamps.append(int(sample["timestamp"]))
                tokens.append(token)
                token = sample["next"]
            self._keyframes[scene_token] = (stamps, tokens)
        return self._keyframes[scene_token]

    def _sample_anns(self, sample_token: str) -> dict[str, _Ann]:
        if sample_token not in self._anns:
            anns = {}
            for ann_token in self.nusc.get("sample", sample_token)["anns"]:
                rec = self.nusc.get("sample_annotation", ann_token)
                name = category_to_detection_name(rec["category_name"])
                if name is None:
                    continue
                attrs = [self.nusc.get("attribute", t)["name"] for t in rec["attribute_tokens"]]
                anns[rec["instance_token"]] = _Ann(
                    instance=rec["instance_token"],
                    label=_LABEL_INDEX[name],
                    translation=np.asarray(rec["translation"], dtype=np.float64),
                    size=np.asarray(rec["size"], dtype=np.float64),
                    rotation=Quaternion(rec["rotation"]),
                    velocity=np.asarray(self.nusc.box_velocity(ann_token), dtype=np.float64),
                    attribute=attrs[0] if attrs else "",
                    num_points=int(rec["num_lidar_pts"]) + int(rec["num_radar_pts"]),
                )
            self._anns[sample_token] = anns
        return self._anns[sample_token]

    def annotations_at(self, scene_token: str, timestamp_us: int, sample_token: str | None = None) -> list[_Ann]:
        """Global-frame annotations of the scene at a time: the keyframe's, or interpolated at a sweep."""
        if sample_token is not None:
            return list(self._sample_anns(sample_token).values())
        stamps, tokens = self._scene_keyframes(scene_token)
        if not stamps:
            return []
        k = min(bisect.bisect_left(stamps, int(timestamp_us)), len(stamps) - 1)  # next keyframe (or the last)
        curr = self._sample_anns(tokens[k])
        if k == 0 or stamps[k] == timestamp_us:
            return list(curr.values())
        prev = self._sample_anns(tokens[k - 1])
        t0, t1 = stamps[k - 1], stamps[k]
        amount = (max(t0, min(t1, int(timestamp_us))) - t0) / (t1 - t0)
        out = []
        for inst, b in curr.items():
            a = prev.get(inst)
            if a is None:
                out.append(b)
                continue
            out.append(
                _Ann(
                    instance=inst,
                    label=b.label,
                    translation=a.translation + amount * (b.translation - a.translation),
                    size=a.size + amount * (b.size - a.size),
                    rotation=Quaternion.slerp(q0=a.rotation, q1=b.rotation, amount=amount),
                    velocity=_interp_velocity(a.velocity, b.velocity, amount),
                    attribute=(a if amount < 0.5 else b).attribute,
                    num_points=(a if amount < 0.5 else b).num_points,
                )
            )
        return out

    def boxes_at(self, scene_token: str, timestamp_us: int, ego_to_global: Pose, sample_token: str | None = None) -> BoxTargets:
        """Detection-class boxes in the ego frame at `timestamp_us`, centres inside the grid."""
        rows, labels, valid, insts, attrs, npts = [], [], [], [], [], []
        for ann in self.annotations_at(scene_token, timestamp_us, sample_token):
            if ann.num_points < self.min_points:
                continue
            ok = bool(np.all(np.isfinite(ann.velocity[:2])))
            box = ego_box(ann.translation, ann.size, ann.rotation, np.where(np.isfinite(ann.velocity), ann.velocity, 0.0), ego_to_global)
            x, y, z = box.center
            if not (self.grid.x_min <= x < self.grid.x_max and self.grid.y_min <= y < self.grid.y_max):
                continue
            w, l, h = box.wlh
            yaw = box.orientation.yaw_pitch_roll[0]
            vx, vy = (box.velocity[:2] if ok else (0.0, 0.0))
            rows.append((x, y, z, w, l, h, yaw, vx, vy))
            labels.append(ann.label)
            valid.append(ok)
            insts.append(ann.instance)
            attrs.append(ann.attribute)
            npts.append(ann.num_points)
        if not rows:
            return BoxTargets.empty()
        return BoxTargets(
            boxes=np.asarray(rows, dtype=np.float32),
            labels=np.asarray(labels, dtype=np.int64),
            velocity_valid=np.asarray(valid, dtype=bool),
            instance_tokens=tuple(insts),
            attribute_names=tuple(attrs),
            num_points=np.asarray(npts, dtype=np.int64),
        )

    # ---- road geometry and label images -----------------------------------------------------------------

    def road_geometry(self, scene_name: str) -> dict | None:
        """The scene's global road geometry JSON (replay/layout.py), or None where the dataroot has none."""
        if scene_name not in self._road:
            path = road_geometry_path(self.dataroot, scene_name)
            if path.is_file():
                with open(path) as f:
                    data = json.load(f)
                if data.get("frame", "global") != "global":
                    raise ValueError(f"{path}: road geometry frame is {data.get('frame')!r}, expected 'global'")
                self._road[scene_name] = data
            else:
                self._road[scene_name] = None
        return self._road[scene_name]

    def road_at(self, scene_name: str, ego_to_global: Pose) -> dict[str, list[np.ndarray]] | None:
        """Road polylines in the ego frame clipped to the grid: {class: [(K, 2) float32, ...]}, or None."""
        data = self.road_geometry(scene_name)
        if data is None:
            return None
        out: dict[str, list[np.ndarray]] = {}
        for cls in ROAD_CLASSES:
            lines = []
            for item in data.get(cls, []):
                pts = np.asarray(item["points"], dtype=np.float64)
                if pts.ndim != 2 or pts.shape[0] < 2:
                    continue
                lines.extend(_polyline_in_grid(global_to_ego_2d(pts, ego_to_global), self.grid))
            out[cls] = lines
        return out

    def seg_label(self, sample_data_token: str) -> np.ndarray | None:
        """(H, W) uint8 label image of a camera sample_data (values index SEG_CLASSES), or None where absent."""
        if sample_data_token is None:
            return None
        path = label_path(self.dataroot, self.nusc.get("sample_data", sample_data_token)["filename"])
        if not path.is_file():
            return None
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im.convert("L") if im.mode not in ("L", "P") else im, dtype=np.uint8)

    def lidar_points(self, sample_token: str) -> np.ndarray | None:
        """(N, 3) float64 global positions of a keyframe's LIDAR_TOP returns, or None where its point file
        is absent (the real scene beside this project ships without them)."""
        from nuscenes.utils.data_classes import LidarPointCloud

        sd = self.nusc.get("sample_data", self.nusc.get("sample", sample_token)["data"]["LIDAR_TOP"])
        path = self.dataroot / sd["filename"]
        if not path.is_file():
            return None
        cloud = LidarPointCloud.from_file(str(path))  # (4, N) in the sensor frame
        for record in (self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]), self.nusc.get("ego_pose", sd["ego_pose_token"])):
            cloud.rotate(Quaternion(record["rotation"]).rotation_matrix)  # sensor -> ego, then ego -> global
            cloud.translate(np.asarray(record["translation"], dtype=np.float64))
        return cloud.points[:3].T.astype(np.float64)

    # ---- a whole frame set ------------------------------------------------------------------------------

    def scene_token(self, scene_name: str) -> str:
        try:
            return self._scene_by_name[scene_name]["token"]
        except KeyError:
            raise KeyError(f"scene {scene_name!r} is not in {self.dataroot} ({self.nusc.version})") from None

    def for_frame_set(self, frame_set: FrameSet, with_labels: bool = True, with_lidar: bool = False) -> FrameGroundTruth:
        """Ground truth of one frame set at its reference time and ego pose (`with_lidar`: and, at a
        keyframe, its lidar returns)."""
        boxes = self.boxes_at(
            self.scene_token(frame_set.scene), frame_set.timestamp_us, frame_set.ego_to_global, frame_set.sample_token
        )
        road = self.road_at(frame_set.scene, frame_set.ego_to_global)
        labels = tuple(self.seg_label(c.sample_data_token) if with_labels else None for c in frame_set.cameras)
        points = self.lidar_points(frame_set.sample_token) if with_lidar and frame_set.is_keyframe else None
        return FrameGroundTruth(boxes=boxes, road=road, seg_labels=labels, lidar_points=points)


def _interp_velocity(v0: np.ndarray, v1: np.ndarray, amount: float) -> np.ndarray:
    """Linear interpolation that falls back to whichever end is finite (NaN where neither is)."""
    ok0, ok1 = np.all(np.isfinite(v0)), np.all(np.isfinite(v1))
    if ok0 and ok1:
        return v0 + amount * (v1 - v0)
    if ok0:
        return v0
    if ok1:
        return v1
    return np.full(3, np.nan)


def boxes_to_global(boxes: np.ndarray, ego_to_global: Pose) -> list[Box]:
    """(N, 9) ego-frame boxes -> devkit Boxes in the global frame (velocity rotated back; vz = 0)."""
    out = []
    for x, y, z, w, l, h, yaw, vx, vy in np.asarray(boxes, dtype=np.float64):
        box = Box([x, y, z], [w, l, h], Quaternion(axis=[0, 0, 1], angle=yaw), velocity=(vx, vy, 0.0))
        box.rotate(ego_to_global.rotation)
        box.translate(ego_to_global.translation)
        out.append(box)
    return out

