"""The oracle: a model (runtime/model_protocol.py) that emits, each tick, the log's own annotations of that tick.

With known answers in place of a network, a replay checks the runtime, the submission and the evaluation
end to end: `bevstream replay --model oracle` should score close to the ground truth itself (the devkit
scores the annotations as predictions at NDS 1.0 when the boxes no sensor saw are left out).

What it emits, per tick (ego frame; the BEV stage takes it to the global frame as for any model):
- a keyframe tick (it carries its sample token): the sample's annotations, velocity from the devkit's
  `box_velocity` (0 where the devkit cannot tell), attribute from the annotation, score 1.0;
- a sweep tick (12 Hz, no sample token): the annotations interpolated to the tick's time between the
  keyframes around it (replay/nuscenes/interpolate.py: objects annotated in both, centre and size linear,
  rotation slerp); none before the scene's first or after its last keyframe;
- a tick of a scene the log does not hold (a live stream): nothing (warned once per scene).
Only the ten detection classes, and only annotations with lidar or radar points (`visible_only`; the
evaluation drops the others from its ground truth, so as predictions they would only be false positives).
Track ids: each instance token numbered in order of first appearance within the scene (the temporal state,
so checkpoints keep them). No road polylines; segmentation (N, 0, 0): none. It reads no pixel.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runtime.model_protocol import BevInputs
from schema.classes import DETECTION_NAMES
from schema.results import DetectionArrays, Polyline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OracleFactory:
    """Picklable zero-arg factory of the oracle: where the log is. Each actor builds its own OracleModel."""

    dataroot: str
    version: str
    visible_only: bool = True

    def __call__(self) -> "OracleModel":
        return OracleModel(self.dataroot, self.version, self.visible_only)


def oracle_factory(config: Any) -> OracleFactory:
    """`model.factory: oracle` (runtime/model_factory.py calls it with the RuntimeConfig): the log to read is
    the replay's own, source.nuscenes.dataroot and version."""
    source = config.source.nuscenes
    if source.dataroot is None:
        raise ValueError("the oracle reads the log's annotations: set source.nuscenes.dataroot (or pass --dataroot)")
    table = Path(source.dataroot) / source.version / "sample_annotation.json"
    if not table.is_file():
        raise ValueError(f"no annotations to read: {table} not found (source.nuscenes.dataroot and version)")
    return OracleFactory(str(source.dataroot), source.version)


@dataclass(frozen=True)
class OracleOutputs:
    """One tick's annotations in the ego frame (step -> decode)."""

    boxes: np.ndarray  # (M, 9) float64 x, y, z, w, l, h, yaw, vx, vy
    names: tuple[str, ...]  # (M,) detection class names
    attributes: tuple[str, ...]  # (M,) attribute names ('' for none)
    track_ids: np.ndarray  # (M,) int64


class OracleModel:
    """runtime.model_protocol.PerceptionModel over a nuScenes log's annotations (the devkit's tables, loaded
    on the first BEV step, so the backbone side, which never steps, does not load them)."""

    def __init__(self, dataroot: str, version: str, visible_only: bool = True):
        self.dataroot, self.version, self.visible_only = dataroot, version, visible_only
        self._nusc = None
        self._scene_tokens: dict[str, str] = {}  # scene name -> token
        self._warned: set[str] = set()

    @property
    def nusc(self):
        if self._nusc is None:
            from nuscenes.nuscenes import NuScenes

            self._nusc = NuScenes(self.version, self.dataroot, verbose=False)
            self._scene_tokens = {s["name"]: s["token"] for s in self._nusc.scene}
        return self._nusc

    # -- the backbone side: no pixel is looked at -------------------------------------------------------
    def preprocess(self, images, channels, intrinsics, cam_to_ego):
        n = len(images)
        x = np.zeros((1, n, 1, 1, 1), np.float32)  # (1, N, C=1, 1, 1): a placeholder feature per camera
        return x, np.asarray(intrinsics, np.float32), np.asarray(cam_to_ego, np.float32)

    def encode(self, x):
        n = x.shape[1]
        return x, np.zeros((n, 0, 0), np.uint8)  # (1, N, 1, 1, 1) features, (N, 0, 0): no segmentation

    # -- the BEV side: the annotations of the tick -------------------------------------------------------
    def annotations(self, inputs: BevInputs) -> list:
        """The tick's replay.nuscenes.interpolate.GroundTruthBox list (global frame)."""
        from replay.nuscenes.interpolate import annotations_at, keyframe_annotations

        nusc = self.nusc
        ego_position = inputs.ego_to_global[0, :3, 3]  # (3,)
        if inputs.sample_token is not None:
            return keyframe_annotations(nusc, inputs.sample_token, ego_position)
        scene = self._scene_tokens.get(inputs.scene)
        if scene is None:
            if inputs.scene not in self._warned:
                self._warned.add(inputs.scene)
                log.warning("oracle: scene %r is not in %s: its ticks get no annotation", inputs.scene, self.dataroot)
            return []
        try:
            return annotations_at(nusc, scene, inputs.timestamp_us, ego_position)
        except ValueError:  # before the scene's first or after its last keyframe: nothing to interpolate
            return []

    def step(self, feats, inputs: BevInputs, state: dict[str, int]):
        gts = [g for g in self.annotations(inputs) if g.detection_name is not None
               and (not self.visible_only or g.num_lidar_pts + g.num_radar_pts > 0)]
        new = [g.instance_token for g in gts if g.instance_token not in state]
        if new:  # a new state, never the one given mutated (a checkpoint may be serialising it)
            state = {**state, **{tok: len(state) + i for i, tok in enumerate(dict.fromkeys(new))}}
        outputs = OracleOutputs(boxes_in_ego(gts, inputs.ego_to_global[0]), tuple(g.detection_name for g in gts),
                                tuple(g.attribute_name for g in gts),
                                np.array([state[g.instance_token] for g in gts], np.int64))
        return outputs, state

    def decode(self, outputs: OracleOutputs, track_filter=None) -> tuple[DetectionArrays, list[Polyline]]:
        n = len(outputs.names)
        labels = [DETECTION_NAMES.index(name) for name in outputs.names]
        return DetectionArrays("ego", outputs.boxes, np.ones(n, np.float32), labels, outputs.names, outputs.attributes,
                               outputs.track_ids), []

    def new_state(self) -> dict[str, int]:
        return {}  # instance token -> track id, within the scene

    def state_to_bytes(self, state: dict[str, int]) -> bytes:
        return json.dumps(state).encode()

    def state_from_bytes(self, data: bytes) -> dict[str, int]:
        return json.loads(data.decode())


def boxes_in_ego(gts: list, ego_to_global: np.ndarray) -> np.ndarray:
    """Global-frame GroundTruthBoxes + the (4, 4) ego->global pose -> (M, 9) ego-frame boxes x, y, z, w, l, h,
    yaw, vx, vy: yaw is the heading of the box's x axis (the devkit's quaternion_yaw) seen from the ego; a
    velocity the devkit cannot tell (NaN) is 0, as the submission writes it."""
    from pyquaternion import Quaternion

    if not gts:
        return np.zeros((0, 9), np.float64)
    r_t, t = ego_to_global[:3, :3].T, ego_to_global[:3, 3]  # global -> ego rotation, ego position
    centres = (np.array([g.translation for g in gts]) - t) @ r_t.T  # (M, 3)
    headings = np.array([Quaternion(g.rotation).rotation_matrix[:, 0] for g in gts]) @ r_t.T  # (M, 3)
    vel = np.nan_to_num(np.array([[*g.velocity, 0.0] for g in gts]), nan=0.0) @ r_t.T  # (M, 3)
    yaw = np.arctan2(headings[:, 1], headings[:, 0])  # (M,)
    return np.concatenate([centres, np.array([g.size for g in gts]), yaw[:, None], vel[:, :2]], axis=1)
