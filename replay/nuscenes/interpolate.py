"""Ground truth at the 12 Hz sweeps of a real log: the 2 Hz keyframe annotations interpolated the devkit's way.

A streaming evaluation scores every camera cycle, but nuScenes annotates only its 2 Hz keyframes. As
ASAP's nuScenes-H does (and the devkit's own `NuScenes.get_boxes` for a sweep), an object annotated in
both keyframes around a time t gets its centre and size interpolated linearly and its rotation by slerp
(pyquaternion) at the fraction a = (t - t0) / (t1 - t0) of the keyframe sample timestamps; objects
annotated in only one of the two are left out (ASAP's 'interp' strategy). Between keyframes the
velocity is the interpolation's own, (c1 - c0) / (t1 - t0): what the devkit's `box_velocity` gives on
a densified 12 Hz track. Attribute, visibility and point counts come from the earlier keyframe, as in
ASAP. At a keyframe the keyframe's annotations are returned unchanged (velocity from `box_velocity`).

    sweep_annotations(nusc, sample_data_token) -> [GroundTruthBox, ...]   # global frame
    annotations_at(nusc, scene_token, timestamp_us, ego_position) -> [GroundTruthBox, ...]
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from nuscenes.eval.detection.data_classes import DetectionBox
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.eval.tracking.data_classes import TrackingBox
from nuscenes.eval.tracking.utils import category_to_tracking_name
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import Box
from pyquaternion import Quaternion

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class GroundTruthBox:
    """One annotated object at one moment, global frame, with every field DetectionBox/TrackingBox need."""

    instance_token: str  # the track id of the tracking evaluation
    annotation_token: str  # the keyframe annotation it is, or the earlier one it was interpolated from
    category_name: str  # nuScenes category, e.g. 'vehicle.car'
    timestamp_us: int  # the moment it describes
    translation: Vec3  # box centre (x, y, z), global frame, m
    size: Vec3  # (w, l, h), m
    rotation: tuple[float, float, float, float]  # (w, x, y, z), box -> global
    velocity: tuple[float, float]  # (vx, vy), global frame, m/s; NaN where the devkit cannot tell
    ego_translation: Vec3  # box centre minus the ego position (the devkit's add_center_dist), m
    attribute_name: str  # '' when the annotation has none
    num_lidar_pts: int
    num_radar_pts: int
    visibility_token: str  # '1'..'4'
    interpolated: bool  # False at a keyframe

    @property
    def detection_name(self) -> str | None:
        """One of the ten detection classes, or None where the detection evaluation ignores the category."""
        return category_to_detection_name(self.category_name)

    @property
    def tracking_name(self) -> str | None:
        """One of the seven tracking classes, or None where the tracking evaluation ignores the category."""
        return category_to_tracking_name(self.category_name)

    def box(self) -> Box:
        """The devkit's geometry Box (global frame), for corners, distances and plots."""
        return Box(list(self.translation), list(self.size), Quaternion(self.rotation), velocity=(*self.velocity, np.nan),
                   name=self.category_name, token=self.annotation_token)

    def detection_box(self, sample_token: str) -> DetectionBox:
        """As the devkit's load_gt builds a detection ground-truth box; `sample_token` keys it (any string)."""
        if self.detection_name is None:
            raise ValueError(f"category {self.category_name!r} is not a detection class")
        return DetectionBox(**self._eval_box_fields(sample_token), detection_name=self.detection_name,
                            attribute_name=self.attribute_name)

    def tracking_box(self, sample_token: str) -> TrackingBox:
        """As the devkit's load_gt builds a tracking ground-truth box (the instance token is the track id).

        The devkit fills TrackingBox's class list when a TrackingConfig is built (config_factory), so build
        the tracking evaluation's config first, as its evaluation does."""
        if self.tracking_name is None:
            raise ValueError(f"category {self.category_name!r} is not a tracking class")
        return TrackingBox(**self._eval_box_fields(sample_token), tracking_id=self.instance_token,
                           tracking_name=self.tracking_name)

    def _eval_box_fields(self, sample_token: str) -> dict:
        """The fields the devkit's EvalBox (DetectionBox and TrackingBox alike) takes, as load_gt fills them."""
        return dict(sample_token=sample_token, translation=self.translation, size=self.size, rotation=self.rotation,
                    velocity=self.velocity, ego_translation=self.ego_translation,
                    num_pts=self.num_lidar_pts + self.num_radar_pts)


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _attribute(nusc: NuScenes, ann: dict) -> str:
    """The annotation's one attribute name ('' for none), as load_gt reads it."""
    tokens = ann["attribute_tokens"]
    if len(tokens) > 1:
        raise ValueError(f"annotation {ann['token']} has {len(tokens)} attributes; the evaluation allows one")
    return nusc.get("attribute", tokens[0])["name"] if tokens else ""


def _ground_truth(nusc: NuScenes, ann: dict, timestamp_us: int, ego_position: np.ndarray, *, translation=None,
                  size=None, rotation=None, velocity=None) -> GroundTruthBox:
    """A GroundTruthBox from a keyframe annotation, with the geometry overridden where interpolated."""
    interpolated = translation is not None
    centre = np.asarray(ann["translation"] if translation is None else translation, dtype=np.float64)  # (3,)
    if velocity is None:
        velocity = nusc.box_velocity(ann["token"])[:2]
    return GroundTruthBox(
        instance_token=ann["instance_token"],
        annotation_token=ann["token"],
        category_name=ann["category_name"],
        timestamp_us=int(timestamp_us),
        translation=_floats(centre),
        size=_floats(ann["size"] if size is None else size),
        rotation=_floats(ann["rotation"] if rotation is None else rotation),
        velocity=_floats(velocity),
        ego_translation=_floats(centre - ego_position),
        attribute_name=_attribute(nusc, ann),
        num_lidar_pts=int(ann["num_lidar_pts"]),
        num_radar_pts=int(ann["num_radar_pts"]),
        visibility_token=str(ann["visibility_token"]),
        interpolated=interpolated,
    )


def keyframe_annotations(nusc: NuScenes, sample_token: str, ego_position: Sequence[float]) -> list[GroundTruthBox]:
    """The sample's own annotations, unchanged (velocity from the devkit's box_velocity)."""
    sample = nusc.get("sample", sample_token)
    ego = np.asarray(ego_position, dtype=np.float64)  # (3,)
    return [_ground_truth(nusc, nusc.get("sample_annotation", tok), sample["timestamp"], ego) for tok in sample["anns"]]


def interpolate_annotations(nusc: NuScenes, sample0: str, sample1: str, timestamp_us: int,
                            ego_position: Sequence[float]) -> list[GroundTruthBox]:
    """The objects annotated in both samples (consecutive keyframes, t0 <= t <= t1), interpolated to t."""
    rec0, rec1 = nusc.get("sample", sample0), nusc.get("sample", sample1)
    t0, t1 = rec0["timestamp"], rec1["timestamp"]
    if not t0 < t1 or not t0 <= timestamp_us <= t1:
        raise ValueError(f"need t0 < t1 and t0 <= t <= t1, got t0={t0}, t1={t1}, t={timestamp_us}")
    amount = (timestamp_us - t0) / (t1 - t0)
    ego = np.asarray(ego_position, dtype=np.float64)  # (3,)
    later = {ann["instance_token"]: ann for ann in (nusc.get("sample_annotation", tok) for tok in rec1["anns"])}
    boxes = []
    for tok in rec0["anns"]:
        ann0 = nusc.get("sample_annotation", tok)
        ann1 = later.get(ann0["instance_token"])
        if ann1 is None:
            continue  # annotated at one keyframe only: no ground truth between them (ASAP's 'interp')
        c0, c1 = np.asarray(ann0["translation"], dtype=np.float64), np.asarray(ann1["translation"], dtype=np.float64)
        s0, s1 = np.asarray(ann0["size"], dtype=np.float64), np.asarray(ann1["size"], dtype=np.float64)
        rotation = Quaternion.slerp(q0=Quaternion(ann0["rotation"]), q1=Quaternion(ann1["rotation"]), amount=amount)
        boxes.append(_ground_truth(
            nusc, ann0, timestamp_us, ego,
            translation=c0 + amount * (c1 - c0),  # (3,)
            size=s0 + amount * (s1 - s0),  # (3,)
            rotation=rotation.elements,  # (4,) w, x, y, z
            velocity=(c1 - c0)[:2] / ((t1 - t0) * 1e-6),  # (2,) m/s
        ))
    return boxes


def scene_samples(nusc: NuScenes, scene_token: str) -> list[dict]:
    """The scene's samples (keyframes) in time order, following the prev/next chain."""
    samples, token = [], nusc.get("scene", scene_token)["first_sample_token"]
    while token:
        samples.append(nusc.get("sample", token))
        token = samples[-1]["next"]
    return samples


def annotations_at(nusc: NuScenes, scene_token: str, timestamp_us: int,
                   ego_position: Sequence[float]) -> list[GroundTruthBox]:
    """Ground truth of the scene at any time within its keyframes: a keyframe's own annotations at its
    timestamp, else the interpolation between the keyframes around it. Outside them: ValueError."""
    samples = scene_samples(nusc, scene_token)
    times = [s["timestamp"] for s in samples]
    if not times[0] <= timestamp_us <= times[-1]:
        raise ValueError(f"t={timestamp_us} is outside the keyframes of scene {scene_token} "
                         f"[{times[0]}, {times[-1]}]: no annotation to interpolate from")
    i = bisect.bisect_left(times, timestamp_us)
    if times[i] == timestamp_us:
        return keyframe_annotations(nusc, samples[i]["token"], ego_position)
    return interpolate_annotations(nusc, samples[i - 1]["token"], samples[i]["token"], timestamp_us, ego_position)


def sweep_annotations(nusc: NuScenes, sample_data_token: str) -> list[GroundTruthBox]:
    """Ground truth at one sample_data (camera or lidar, keyframe or sweep), global frame.

    A keyframe's sample_data gets its sample's annotations, as the devkit's get_boxes does; a sweep gets
    the interpolation at its own timestamp. Ego distances are from that sample_data's ego pose. A sweep
    before the scene's first or after its last keyframe has no ground truth: ValueError.
    """
    sd = nusc.get("sample_data", sample_data_token)
    ego = nusc.get("ego_pose", sd["ego_pose_token"])["translation"]
    if sd["is_key_frame"]:
        return keyframe_annotations(nusc, sd["sample_token"], ego)
    scene_token = nusc.get("sample", sd["sample_token"])["scene_token"]
    return annotations_at(nusc, scene_token, sd["timestamp"], ego)
