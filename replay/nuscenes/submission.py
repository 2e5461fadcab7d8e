"""The official nuScenes detection submission file: write, read, and ground truth as predictions (and the
tracking submission's boxes, tracking_entry, which the same writer writes).

    {"meta": {"use_camera": true, ...},
     "results": {sample_token: [{"sample_token", "translation", "size", "rotation", "velocity",
                                 "detection_name", "detection_score", "attribute_name"}, ...]}}

as read by nuscenes.eval.common.loaders.load_prediction / DetectionBox.deserialize. Every sample of
the evaluated split must appear in "results" (an empty list where nothing was detected).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np
from pyquaternion import Quaternion

from schema.classes import DETECTION_NAMES, TRACKING_NAMES
from schema.results import DetectionArrays

if TYPE_CHECKING:
    from nuscenes.nuscenes import NuScenes

DEFAULT_META = {"use_camera": True, "use_lidar": False, "use_radar": False, "use_map": False, "use_external": False}
MAX_BOXES_PER_SAMPLE = 500  # the devkit's limit
# The devkit (~3 s to import) is imported inside the functions that need it, so importing this module
# (the runtime's sink does, at start-up) stays cheap.


def _attribute_names() -> frozenset[str]:
    from nuscenes.eval.detection.constants import ATTRIBUTE_NAMES

    return frozenset(ATTRIBUTE_NAMES)


def detection_entry(
    sample_token: str,
    translation: Sequence[float],
    size: Sequence[float],
    rotation: Sequence[float],
    velocity: Sequence[float],
    detection_name: str,
    detection_score: float,
    attribute_name: str = "",
) -> dict:
    """One box in the official format (global frame; size w, l, h; rotation w, x, y, z; velocity vx, vy).

    A NaN velocity (the devkit's box_velocity for a lone annotation) is written as 0.
    """
    if detection_name not in DETECTION_NAMES:
        raise ValueError(f"unknown detection_name {detection_name!r}; expected one of {DETECTION_NAMES}")
    if attribute_name and attribute_name not in _attribute_names():
        raise ValueError(f"unknown attribute_name {attribute_name!r}")
    if len(translation) != 3 or len(size) != 3 or len(rotation) != 4 or len(velocity) < 2:
        raise ValueError("translation and size need 3 values, rotation 4 (w, x, y, z), velocity 2 (vx, vy)")
    score = float(detection_score)
    if not math.isfinite(score):
        raise ValueError(f"detection_score must be finite, got {detection_score}")
    vel = [0.0 if not math.isfinite(float(v)) else float(v) for v in list(velocity)[:2]]
    return {
        "sample_token": sample_token,
        "translation": [float(v) for v in translation],
        "size": [float(v) for v in size],
        "rotation": [float(v) for v in rotation],
        "velocity": vel,
        "detection_name": detection_name,
        "detection_score": score,
        "attribute_name": attribute_name,
    }


def tracking_entry(
    sample_token: str,
    translation: Sequence[float],
    size: Sequence[float],
    rotation: Sequence[float],
    velocity: Sequence[float],
    tracking_id: str,
    tracking_name: str,
    tracking_score: float,
) -> dict:
    """One box of the official tracking submission (TrackingBox): as detection_entry's box, with its track's id
    (unique within the scene) and one of the seven tracking classes."""

    if tracking_name not in TRACKING_NAMES:
        raise ValueError(f"unknown tracking_name {tracking_name!r}; expected one of {TRACKING_NAMES}")
    box = detection_entry(sample_token, translation, size, rotation, velocity, tracking_name, tracking_score)
    return {**{k: box[k] for k in ("sample_token", "translation", "size", "rotation", "velocity")},
            "tracking_id": str(tracking_id), "tracking_name": tracking_name, "tracking_score": box["detection_score"]}


def write_submission(path: str | Path, results: Mapping[str, Iterable[dict]], meta: Mapping | None = None) -> Path:
    """Write a submission JSON; checks each box's sample token and the per-sample box limit."""
    out: dict[str, list[dict]] = {}
    for sample_token, boxes in results.items():
        boxes = list(boxes)
        if len(boxes) > MAX_BOXES_PER_SAMPLE:
            raise ValueError(f"sample {sample_token} has {len(boxes)} boxes; the devkit allows {MAX_BOXES_PER_SAMPLE}")
        for box in boxes:
            if box["sample_token"] != sample_token:
                raise ValueError(f"box of sample {box['sample_token']} listed under sample {sample_token}")
        out[sample_token] = boxes
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": dict(meta or DEFAULT_META), "results": out}))
    return path


def read_submission(path: str | Path) -> tuple[dict[str, list[dict]], dict]:
    """(results, meta) of a submission file."""
    data = json.loads(Path(path).read_text())
    if "results" not in data or "meta" not in data:
        raise ValueError(f"{path} is not a nuScenes submission: it needs 'meta' and 'results'")
    return data["results"], data["meta"]


def split_sample_tokens(nusc: "NuScenes", eval_set: str, scenes: Iterable[str] | None = None) -> list[str]:
    """Tokens of every sample whose scene is in the devkit's split `eval_set` (e.g. 'mini_val'), and among
    `scenes` (names) when given."""
    from nuscenes.utils.splits import create_splits_scenes

    names = set(create_splits_scenes()[eval_set])
    if scenes is not None:
        names &= set(scenes)
    return [s["token"] for s in nusc.sample if nusc.get("scene", s["scene_token"])["name"] in names]


def _visible_annotations(nusc: "NuScenes", eval_set: str, name_of) -> Iterable[tuple[str, str, dict, str]]:
    """(sample token, annotation token, annotation, class name) of every annotation of `eval_set` that the
    evaluation keeps in its ground truth: with lidar or radar points, of a class `name_of(category)` knows."""
    for sample_token in split_sample_tokens(nusc, eval_set):
        for ann_token in nusc.get("sample", sample_token)["anns"]:
            ann = nusc.get("sample_annotation", ann_token)
            name = name_of(ann["category_name"])
            if name is not None and ann["num_lidar_pts"] + ann["num_radar_pts"] > 0:
                yield sample_token, ann_token, ann, name


def ground_truth_results(nusc: "NuScenes", eval_set: str, score: float = 1.0) -> dict[str, list[dict]]:
    """The annotations of `eval_set` as predictions (a perfect detector), in the official format.

    Skips what the evaluation itself drops from the ground truth (annotations without lidar or
    radar points, categories outside the ten detection classes); velocity from box_velocity.
    """
    from nuscenes.eval.detection.utils import category_to_detection_name

    results: dict[str, list[dict]] = {t: [] for t in split_sample_tokens(nusc, eval_set)}
    for sample_token, ann_token, ann, name in _visible_annotations(nusc, eval_set, category_to_detection_name):
        attrs = [nusc.get("attribute", t)["name"] for t in ann["attribute_tokens"]]
        results[sample_token].append(detection_entry(sample_token, ann["translation"], ann["size"], ann["rotation"],
                                                     nusc.box_velocity(ann_token)[:2], name, score,
                                                     attrs[0] if attrs else ""))
    return results


def ground_truth_tracks(nusc: "NuScenes", eval_set: str, score: float = 1.0) -> dict[str, list[dict]]:
    """The annotations of `eval_set` as tracks (a perfect tracker: each instance one track), in the official
    tracking format; skips what the tracking evaluation drops, as ground_truth_results does."""
    from nuscenes.eval.tracking.utils import category_to_tracking_name

    results: dict[str, list[dict]] = {t: [] for t in split_sample_tokens(nusc, eval_set)}
    for sample_token, ann_token, ann, name in _visible_annotations(nusc, eval_set, category_to_tracking_name):
        results[sample_token].append(tracking_entry(sample_token, ann["translation"], ann["size"], ann["rotation"],
                                                    nusc.box_velocity(ann_token)[:2], ann["instance_token"], name, score))
    return results


def ids_by_score(scores, track_ids) -> np.ndarray:
    """(N,) scores and track ids of a tick's boxes -> the ids in the order its submission boxes are written,
    best score first, as submission_boxes writes them."""
    ids = np.asarray(track_ids, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores).reshape(-1)
    if len(ids) != len(scores):
        raise ValueError(f"ids_by_score: {len(scores)} boxes but {len(ids)} track ids")
    return ids[np.argsort(-scores, kind="stable")]


def tracking_entries(submitted: Sequence[dict], track_ids: Sequence[int], track_prefix: str = "") -> list[dict]:
    """A keyframe's submission boxes (global frame, as written for DetectionEval) and their track ids in the same
    order (ids_by_score) -> official tracking boxes of the tracking classes. `track_prefix` keeps ids apart where
    a tracker restarted its numbering within one scene (the devkit joins boxes into tracks by id per scene)."""
    return [tracking_entry(b["sample_token"], b["translation"], b["size"], b["rotation"], b["velocity"],
                           f"{track_prefix}{int(track)}", b["detection_name"], b["detection_score"])
            for b, track in zip(submitted, track_ids) if b["detection_name"] in TRACKING_NAMES]


def submission_boxes(sample_token: str, detections: DetectionArrays, max_boxes: int = MAX_BOXES_PER_SAMPLE) -> list[dict]:
    """A keyframe's global-frame detections as official submission boxes, highest scores first: the one writer
    of submission boxes (the runtime's sink and `bevstream eval` alike)."""
    if detections.frame != "global":
        raise ValueError(f"submission_boxes needs global-frame detections, got {detections.frame!r}")
    order = np.argsort(-detections.scores, kind="stable")[:max_boxes]
    out = []
    for i in order:
        b = detections.boxes[i].astype(np.float64)
        out.append(detection_entry(
            sample_token,
            translation=b[0:3],
            size=np.maximum(b[3:6], 1e-3),  # w, l, h (the devkit's wlh)
            rotation=Quaternion(axis=[0.0, 0.0, 1.0], angle=float(b[6])).elements,  # global yaw
            velocity=b[7:9],
            detection_name=detections.names[i],
            detection_score=float(detections.scores[i]),
            attribute_name=detections.attributes[i],
        ))
    return out
