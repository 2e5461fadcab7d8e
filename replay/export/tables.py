"""The rows of the thirteen nuScenes tables for a simulated drive (pure: no rendering, no files).

`export.py` renders the images and measures visibility and lidar hits; this module turns those
measurements into table rows with the devkit's schema (see nuscenes/nuscenes.py and the real
tables in shared/data/nuscenes-real-scene-0523). Tokens are md5 hashes of the seed, scene and
record names, so the same seed gives byte-identical tables.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from schema.messages import Pose

# The 23 object categories of nuScenes v1.0 with their lidarseg index (the real category.json).
CATEGORIES: tuple[tuple[str, int, str], ...] = (
    ("animal", 1, "All animals, e.g. cats, rats, dogs, deer, birds."),
    ("human.pedestrian.adult", 2, "Adult subcategory."),
    ("human.pedestrian.child", 3, "Child subcategory."),
    ("human.pedestrian.construction_worker", 4, "Construction worker"),
    ("human.pedestrian.personal_mobility", 5, "A small electric or self-propelled vehicle, e.g. skateboard, segway, or scooters, on which the person typically travels in a upright position."),
    ("human.pedestrian.police_officer", 6, "Police officer."),
    ("human.pedestrian.stroller", 7, "Strollers. If a person is in the stroller, include in the annotation."),
    ("human.pedestrian.wheelchair", 8, "Wheelchairs. If a person is in the wheelchair, include in the annotation."),
    ("movable_object.barrier", 9, "Temporary road barrier placed in the scene in order to redirect traffic."),
    ("movable_object.debris", 10, "Movable object that is left on the driveable surface that is too large to be driven over safely."),
    ("movable_object.pushable_pullable", 11, "Objects that a pedestrian may push or pull, e.g. dolleys, wheel barrows, garbage-bins, or shopping carts."),
    ("movable_object.trafficcone", 12, "All types of traffic cone."),
    ("static_object.bicycle_rack", 13, "Area or device intended to park or secure the bicycles in a row."),
    ("vehicle.bicycle", 14, "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds."),
    ("vehicle.bus.bendy", 15, "Bendy bus subcategory. Annotate each section of the bendy bus individually."),
    ("vehicle.bus.rigid", 16, "Rigid bus subcategory."),
    ("vehicle.car", 17, "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, wagons, vans, mini-vans, SUVs and jeeps."),
    ("vehicle.construction", 18, "Vehicles primarily designed for construction. Typically very slow moving or stationary."),
    ("vehicle.emergency.ambulance", 19, "All types of ambulances."),
    ("vehicle.emergency.police", 20, "All types of police vehicles including police bicycles and motorcycles."),
    ("vehicle.motorcycle", 21, "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly (at the speed of standard cars)."),
    ("vehicle.trailer", 22, "Any vehicle trailer, both for trucks, cars and bikes."),
    ("vehicle.truck", 23, "Vehicles primarily designed to haul cargo including pick-ups, lorrys, trucks and semi-tractors."),
)
CATEGORY_NAMES: frozenset[str] = frozenset(name for name, _, _ in CATEGORIES)

ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)

# nuScenes visibility bins: token '1'..'4' for 0-40, 40-60, 60-80, 80-100 % of the object visible.
VISIBILITY: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)

ANNOTATION_RADIUS_M = 60.0  # agents within this xy distance of the ego are annotated at a keyframe


def make_token(*parts: Any) -> str:
    """A deterministic 32-hex-digit token from the record's identifying parts."""
    return hashlib.md5("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def visibility_token(fraction: float) -> str:
    """nuScenes visibility bin ('1'..'4') of the fraction of a box visible in the cameras."""
    if not 0.0 <= fraction <= 1.0 + 1e-9 or np.isnan(fraction):
        raise ValueError(f"visible fraction must be in [0, 1], got {fraction}")
    return "1" if fraction < 0.4 else "2" if fraction < 0.6 else "3" if fraction < 0.8 else "4"


def _floats(values: Any, ndigits: int = 6) -> list[float]:
    return [round(float(v), ndigits) for v in np.asarray(values, dtype=np.float64).reshape(-1)]


def _quat(q: Any) -> list[float]:
    return [float(v) for v in np.asarray(q.elements, dtype=np.float64)]


def static_tables(sensors: Sequence[tuple[str, str]]) -> dict[str, list[dict]]:
    """category, attribute, visibility and sensor tables; `sensors` is (channel, modality) pairs."""
    return {
        "category": [
            {"token": make_token("category", name), "name": name, "description": desc, "index": index}
            for name, index, desc in CATEGORIES
        ],
        "attribute": [
            {"token": make_token("attribute", name), "name": name, "description": desc} for name, desc in ATTRIBUTES
        ],
        "visibility": [{"description": desc, "token": tok, "level": level} for tok, level, desc in VISIBILITY],
        "sensor": [
            {"token": make_token("sensor", channel), "channel": channel, "modality": modality}
            for channel, modality in sensors
        ],
    }


@dataclass(frozen=True)
class SceneInfo:
    """What identifies one exported scene and its log."""

    key: str  # unique across datasets of this seed, e.g. 'seed0/scene3'; every token derives from it
    name: str  # scene name from the devkit's splits, e.g. 'scene-0103'
    description: str
    logfile: str
    date_captured: str  # 'YYYY-MM-DD'
    location: str
    map_filename: str  # 'maps/<map token>.png'

    @property
    def map_token(self) -> str:
        return map_token(self.key)


def map_token(scene_key: str) -> str:
    """Token of a scene's map record (its mask is written as maps/<token>.png)."""
    return make_token("map", scene_key)


@dataclass(frozen=True)
class SensorFrame:
    """One sample_data row to write: a camera image or a lidar sweep, with the ego pose at its time."""

    channel: str
    timestamp_us: int
    ego_pose: Pose  # ego -> global at timestamp_us
    is_key_frame: bool
    filename: str  # relative to the dataroot, e.g. 'samples/CAM_FRONT/<log>__CAM_FRONT__<ts>.jpg'
    fileformat: str  # 'jpg' | 'pcd'
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class KeyframeTruth:
    """Ground truth of one keyframe (sample), measured at the LIDAR_TOP keyframe timestamp."""

    timestamp_us: int
    state: Any  # replay.sim.world.WorldState at timestamp_us
    lidar_points: Mapping[str, int]  # instance_id -> lidar hits
    visibility: Mapping[str, float]  # instance_id -> fraction of the box visible in the cameras


def _annotated_agents(truth: KeyframeTruth, radius_m: float) -> list:
    ego_xy = np.asarray(truth.state.ego_pose.translation, dtype=np.float64)[:2]
    keep = []
    for agent in truth.state.agents:
        if np.linalg.norm(np.asarray(agent.center, dtype=np.float64)[:2] - ego_xy) <= radius_m:
            if agent.category not in CATEGORY_NAMES:
                raise ValueError(f"agent {agent.instance_id} has unknown nuScenes category {agent.category!r}")
            keep.append(agent)
    return sorted(keep, key=lambda a: a.instance_id)


def scene_tables(
    scene: SceneInfo,
    calibrations: Mapping[str, Any],
    frames: Sequence[SensorFrame],
    keyframes: Sequence[KeyframeTruth],
    radius_m: float = ANNOTATION_RADIUS_M,
) -> dict[str, list[dict]]:
    """Rows of the per-scene tables (log, map, scene, sample, sample_data, ego_pose,
    calibrated_sensor, instance, sample_annotation) for one simulated drive.

    `calibrations` maps each channel to a replay.sim.rig.SensorCalibration; `frames` are all sensor
    frames of the scene; frames with is_key_frame are matched to `keyframes` in timestamp order
    per channel (the k-th key frame of every channel belongs to sample k).
    """
    if not keyframes:
        raise ValueError(f"scene {scene.name} has no keyframes")
    kf_times = [k.timestamp_us for k in keyframes]
    if kf_times != sorted(kf_times) or len(set(kf_times)) != len(kf_times):
        raise ValueError(f"keyframe timestamps of scene {scene.name} must be strictly increasing")
    log_token = make_token("log", scene.key)
    scene_token = make_token("scene", scene.key)
    sample_tokens = [make_token("sample", scene.key, i) for i in range(len(keyframes))]

    tables: dict[str, list[dict]] = {
        "log": [
            {
                "token": log_token,
                "logfile": scene.logfile,
                "vehicle": "bevstream-sim",
                "date_captured": scene.date_captured,
                "location": scene.location,
            }
        ],
        "map": [
            {"category": "semantic_prior", "token": scene.map_token, "filename": scene.map_filename, "log_tokens": [log_token]}
        ],
        "scene": [
            {
                "token": scene_token,
                "log_token": log_token,
                "nbr_samples": len(keyframes),
                "first_sample_token": sample_tokens[0],
                "last_sample_token": sample_tokens[-1],
                "name": scene.name,
                "description": scene.description,
            }
        ],
        "sample": [
            {
                "token": tok,
                "timestamp": int(kf.timestamp_us),
                "prev": sample_tokens[i - 1] if i > 0 else "",
                "next": sample_tokens[i + 1] if i + 1 < len(sample_tokens) else "",
                "scene_token": scene_token,
            }
            for i, (tok, kf) in enumerate(zip(sample_tokens, keyframes))
        ],
    }

    # calibrated_sensor: one row per channel and log, as in nuScenes.
    cs_tokens = {}
    tables["calibrated_sensor"] = []
    for channel, calib in calibrations.items():
        cs_tokens[channel] = make_token("calibrated_sensor", scene.key, channel)
        intrinsic = [] if calib.intrinsic is None else [_floats(row, 9) for row in np.asarray(calib.intrinsic)]
        tables["calibrated_sensor"].append(
            {
                "token": cs_tokens[channel],
                "sensor_token": make_token("sensor", channel),
                "translation": _floats(calib.sensor_to_ego.translation),
                "rotation": _quat(calib.sensor_to_ego.rotation),
                "camera_intrinsic": intrinsic,
            }
        )

    tables["sample_data"], tables["ego_pose"] = _sample_data_rows(scene, frames, cs_tokens, sample_tokens)
    tables["instance"], tables["sample_annotation"] = _annotation_rows(scene, keyframes, sample_tokens, radius_m)
    return tables


def _sample_data_rows(scene, frames, cs_tokens, sample_tokens) -> tuple[list[dict], list[dict]]:
    by_channel: dict[str, list[SensorFrame]] = {}
    for f in frames:
        if f.channel not in cs_tokens:
            raise ValueError(f"frame of channel {f.channel!r} has no calibration")
        by_channel.setdefault(f.channel, []).append(f)
    rows: list[dict] = []
    for channel, chain in by_channel.items():
        chain.sort(key=lambda f: f.timestamp_us)
        tokens = [make_token("sample_data", scene.key, channel, f.timestamp_us) for f in chain]
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"{channel} of scene {scene.name} has two frames with the same timestamp")
        n_key = sum(f.is_key_frame for f in chain)
        if n_key != len(sample_tokens):
            raise ValueError(f"{channel} of scene {scene.name} has {n_key} key frames for {len(sample_tokens)} samples")
        seen_keys = 0
        for i, (f, tok) in enumerate(zip(chain, tokens)):
            if f.is_key_frame:
                sample_token = sample_tokens[seen_keys]
                seen_keys += 1
            else:  # sweeps belong to the next keyframe of their channel (the last one after the end)
                sample_token = sample_tokens[min(seen_keys, len(sample_tokens) - 1)]
            rows.append(
                {
                    "token": tok,
                    "sample_token": sample_token,
                    "ego_pose_token": tok,
                    "calibrated_sensor_token": cs_tokens[channel],
                    "timestamp": int(f.timestamp_us),
                    "fileformat": f.fileformat,
                    "is_key_frame": bool(f.is_key_frame),
                    "height": int(f.height),
                    "width": int(f.width),
                    "filename": f.filename,
                    "prev": tokens[i - 1] if i > 0 else "",
                    "next": tokens[i + 1] if i + 1 < len(tokens) else "",
                }
            )
    rows.sort(key=lambda r: (r["timestamp"], r["token"]))
    frame_of = {make_token("sample_data", scene.key, f.channel, f.timestamp_us): f for f in frames}
    ego = [
        {
            "token": r["token"],
            "timestamp": r["timestamp"],
            "rotation": _quat(frame_of[r["token"]].ego_pose.rotation),
            "translation": _floats(frame_of[r["token"]].ego_pose.translation),
        }
        for r in rows
    ]
    return rows, ego


def _annotation_rows(scene, keyframes, sample_tokens, radius_m) -> tuple[list[dict], list[dict]]:
    attribute_tokens = {name: make_token("attribute", name) for name, _ in ATTRIBUTES}
    tracks: dict[str, list[tuple[int, Any, KeyframeTruth]]] = {}
    for k, truth in enumerate(keyframes):
        for agent in _annotated_agents(truth, radius_m):
            tracks.setdefault(agent.instance_id, []).append((k, agent, truth))

    instances, annotations = [], []
    for instance_id in sorted(tracks):
        track = tracks[instance_id]
        inst_token = make_token("instance", scene.key, instance_id)
        ann_tokens = [make_token("sample_annotation", scene.key, instance_id, k) for k, _, _ in track]
        categories = {a.category for _, a, _ in track}
        if len(categories) != 1:
            raise ValueError(f"instance {instance_id} changes category: {sorted(categories)}")
        instances.append(
            {
                "token": inst_token,
                "category_token": make_token("category", track[0][1].category),
                "nbr_annotations": len(track),
                "first_annotation_token": ann_tokens[0],
                "last_annotation_token": ann_tokens[-1],
            }
        )
        for i, ((k, agent, truth), tok) in enumerate(zip(track, ann_tokens)):
            if agent.attribute and agent.attribute not in attribute_tokens:
                raise ValueError(f"agent {instance_id} has unknown nuScenes attribute {agent.attribute!r}")
            annotations.append(
                {
                    "token": tok,
                    "sample_token": sample_tokens[k],
                    "instance_token": inst_token,
                    "visibility_token": visibility_token(float(truth.visibility.get(instance_id, 0.0))),
                    "attribute_tokens": [attribute_tokens[agent.attribute]] if agent.attribute else [],
                    "translation": _floats(agent.center),
                    "size": _floats(agent.size),
                    "rotation": _quat(agent.rotation),
                    "prev": ann_tokens[i - 1] if i > 0 else "",
                    "next": ann_tokens[i + 1] if i + 1 < len(ann_tokens) else "",
                    "num_lidar_pts": int(truth.lidar_points.get(instance_id, 0)),
                    "num_radar_pts": 0,
                }
            )
    order = {tok: k for k, tok in enumerate(sample_tokens)}
    annotations.sort(key=lambda r: (order[r["sample_token"]], r["token"]))
    return instances, annotations
