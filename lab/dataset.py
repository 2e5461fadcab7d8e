"""Training data: ground truth as model Targets, and the clip dataset that feeds the training loop.

`ClipDataset` reads clips through replay.nuscenes.source.NuScenesSource (the replay loader, not a
second one), the ground truth through lab.groundtruth, and applies lab.augment. With the
depth head enabled it also projects each keyframe's lidar returns into the rectified cameras
(`frame_depth_bins`). The inputs themselves come from perception.inputs, the runtime's preprocessing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lab import augment as aug
from lab.groundtruth import GroundTruth
from lab.samplers import StreamItem
from perception.backbone import Backbone
from perception.depth import CameraGeometry, depth_bin_targets
from perception.grid import BEVGrid
from perception.inputs import FrameArrays, frame_set_arrays, rectify_label
from perception.model import IGNORE_INDEX, ModelConfig, ModelInputs, Targets
from perception.rectify import Rectifier
from perception.road import RoadHeadConfig, rasterize_road
from replay.nuscenes.clips import ClipIndex, Cycle, SceneCycles
from replay.nuscenes.source import NuScenesSource
from schema.classes import ROAD_CLASSES
from schema.messages import CAMERA_CHANNELS, FrameSet


@dataclass
class FrameTargetArrays:
    boxes: np.ndarray  # (N, 9) float32 ego
    labels: np.ndarray  # (N,) int64
    road: dict[str, list[np.ndarray]]  # ego polylines
    seg_labels: torch.Tensor  # (Ncam, H, W) int64, 255 ignore
    depth_bins: torch.Tensor | None = None  # (Ncam, H/16, W/16) int64, 255 where no lidar return; None: no depth targets


def frame_depth_bins(points_global: np.ndarray | None, fs: FrameSet, x: FrameArrays, config: ModelConfig) -> torch.Tensor:
    """(Ncam, H/16, W/16) depth-bin targets of a frame set's rectified cameras (CAMERA_CHANNELS slots),
    each camera at the ego pose of its own timestamp; all ignored where there are no points."""
    cameras: list[CameraGeometry | None] = [None] * len(CAMERA_CHANNELS)
    for cam in fs.cameras:
        k = CAMERA_CHANNELS.index(cam.channel)
        cameras[k] = CameraGeometry(x.intrinsics[k], x.cam_to_ego[k], cam.ego_to_global.matrix)
    return depth_bin_targets(points_global, cameras, config.image_size, Backbone.stride, config.depth)


def frame_target_arrays(gt, fs: FrameSet, rectifier: Rectifier) -> FrameTargetArrays:
    """lab.groundtruth.FrameGroundTruth of a frame set -> arrays in the model's input geometry."""
    h, w = rectifier.config.image_size
    seg = torch.full((len(CAMERA_CHANNELS), h, w), IGNORE_INDEX, dtype=torch.int64)
    for cam, label in zip(fs.cameras, gt.seg_labels):
        if label is not None:
            seg[CAMERA_CHANNELS.index(cam.channel)] = rectify_label(rectifier, cam.channel, label, cam.intrinsic, cam.sensor_to_ego.matrix)
    road = gt.road if gt.road is not None else {c: [] for c in ROAD_CLASSES}
    return FrameTargetArrays(gt.boxes.boxes, gt.boxes.labels, road, seg)


def to_targets(t: FrameTargetArrays, grid: BEVGrid, road_upsample: int, road_thickness_m: float) -> Targets:
    """Batched (B=1) Targets; road polylines rasterised as RoadHead.loss expects."""
    road = rasterize_road(t.road, grid, road_upsample, road_thickness_m)  # (2, H_r, W_r)
    return Targets(
        gt_boxes=[torch.as_tensor(np.asarray(t.boxes, np.float32))],
        gt_labels=[torch.as_tensor(np.asarray(t.labels, np.int64))],
        road_masks=torch.from_numpy(road)[None],
        seg_labels=t.seg_labels[None],
        depth_bins=None if t.depth_bins is None else t.depth_bins[None],
    )


def rotate_frame(x: FrameArrays, t: FrameTargetArrays, yaw: float) -> tuple[FrameArrays, FrameTargetArrays]:
    """Turn the ego frame by `yaw` (lab.augment): extrinsics, pose, kinematics, boxes, road; images unchanged."""
    if yaw == 0.0:
        return x, t
    x2 = FrameArrays(
        images=x.images,
        intrinsics=x.intrinsics,
        cam_to_ego=np.where(x.camera_mask[:, None, None], aug.rotate_extrinsics(x.cam_to_ego, yaw), x.cam_to_ego).astype(np.float32),
        camera_mask=x.camera_mask,
        ego_to_global=aug.rotate_ego_pose(x.ego_to_global, yaw),
        timestamp_s=x.timestamp_s,
        kinematics=aug.rotate_kinematics(x.kinematics, yaw),
        reset=x.reset,
    )
    road = {c: [aug.rotate_points_2d(p, yaw) for p in lines] for c, lines in t.road.items()}
    t2 = FrameTargetArrays(aug.rotate_boxes(t.boxes, yaw).astype(np.float32), t.labels, road, t.seg_labels, t.depth_bins)
    return x2, t2


def collate_clips(items: Sequence[Sequence[tuple[ModelInputs, Targets]]]) -> tuple[list[ModelInputs], list[Targets]]:
    """B clips of L (inputs, targets) with B=1 each -> L ModelInputs and L Targets with batch B."""
    lengths = {len(c) for c in items}
    if len(lengths) != 1:
        raise ValueError(f"collate_clips: clips of different lengths {sorted(lengths)}")
    inputs, targets = [], []
    for t in range(lengths.pop()):
        xs = [c[t][0] for c in items]
        ys = [c[t][1] for c in items]
        inputs.append(ModelInputs(**{f: torch.cat([getattr(x, f) for x in xs]) for f in ModelInputs.__dataclass_fields__}))
        targets.append(
            Targets(
                gt_boxes=[b for y in ys for b in y.gt_boxes],
                gt_labels=[b for y in ys for b in y.gt_labels],
                road_masks=torch.cat([y.road_masks for y in ys]),
                seg_labels=torch.cat([y.seg_labels for y in ys]),
                depth_bins=_cat_depth_bins(ys),
            )
        )
    return inputs, targets


def _cat_depth_bins(ys: Sequence[Targets]) -> torch.Tensor | None:
    """Stack the streams' depth bins; a stream without any (None) is all ignored; None if none has any."""
    present = [y.depth_bins for y in ys if y.depth_bins is not None]
    if not present:
        return None
    blank = torch.full_like(present[0], IGNORE_INDEX)
    return torch.cat([y.depth_bins if y.depth_bins is not None else blank for y in ys])


# ---- the clip dataset ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    photometric: aug.PhotometricConfig | None = field(default_factory=aug.PhotometricConfig)  # None: off
    scene_yaw_deg: float = 0.0  # max |yaw| of the BEV-consistent scene rotation; 0: off


def scenes_from_source(source) -> list:
    """replay.nuscenes.clips.SceneCycles of every scene of a NuScenesSource, from the replay's own cycle plan
    (so training clips are exactly the frame sets the runtime replays)."""
    out = []
    for rec in source.scene_records:
        planned = source._plan(rec)[0]
        cycles = tuple(
            Cycle(c.timestamp_us, c.sample_token, tuple(c.sd_tokens.get(ch) for ch in CAMERA_CHANNELS)) for c in planned
        )
        if cycles:
            out.append(SceneCycles(str(source.dataroot), source.version, rec["name"], cycles))
    return out


class ClipDataset(torch.utils.data.Dataset):
    """Item `(clip index, epoch, seed)` -> a clip: list of L (ModelInputs, Targets), B = 1 each.

    Sources, ground truth readers and the rectifier are created lazily in each worker process.
    """

    def __init__(
        self,
        index,  # replay.nuscenes.clips.ClipIndex over scenes_from_source(...) of the dataroots below
        dataroots: Sequence[tuple[str, str]],  # (dataroot, version) of every SceneCycles.dataroot in the index
        model_config: ModelConfig,
        augment: AugmentConfig | None = None,
        min_points: int = 1,
        require_road: bool = True,
    ) -> None:
        self.index = index
        self.dataroots = [(str(d), v) for d, v in dataroots]
        self.model_config = model_config
        self.augment = augment
        self.min_points = min_points
        self.require_road = require_road

        road = model_config.road or RoadHeadConfig()
        self.road_upsample, self.road_thickness = road.upsample, road.thickness_m
        self._sources: dict | None = None
        self._gt: dict = {}
        self._rectifier: Rectifier | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        """Workers get the index and configs only; each opens its own sources (NuScenes tables are large)."""
        state = dict(self.__dict__)
        state.update(_sources=None, _gt={}, _rectifier=None)
        return state

    def _source(self, dataroot: str, version: str):
        if self._sources is None:
            self._sources = {}
        key = (dataroot, version)
        if key not in self._sources:
            src = NuScenesSource(dataroot, version)
            self._sources[key] = src
            self._gt[key] = GroundTruth(src.nusc, self.model_config.grid, min_points=self.min_points)
        return self._sources[key], self._gt[key]

    @property
    def rectifier(self) -> Rectifier:
        if self._rectifier is None:
            self._rectifier = Rectifier(self.model_config.rectify)
        return self._rectifier

    def load_frames(self, clip, continues: bool = False) -> list[FrameSet]:
        """The FrameSets of a clip, loaded by the replay source (the first one marked new_scene unless the
        clip continues a drive)."""
        sc = self.index.scenes[clip.scene_index]
        src, _ = self._source(sc.dataroot, sc.version)
        rec = next(r for r in src.scene_records if r["name"] == sc.scene)
        planned, track_ts, track_poses = src._plan(rec)
        frames = []
        for k, c in enumerate(clip.cycles):
            fs = src._load(sc.scene, planned[c], k, k == 0 and not continues, track_ts, track_poses)
            if fs is None:
                raise RuntimeError(f"{sc.dataroot}: {sc.scene} cycle {c} has no decodable image")
            frames.append(fs)
        return frames

    def __getitem__(self, item) -> list[tuple[ModelInputs, Targets]]:
        """`(clip index, epoch, seed)` (StepSampler), a StreamItem (StreamSampler) or a plain clip index."""
        if isinstance(item, StreamItem):
            clip, seed, continues = item
        else:
            i, epoch, seed = item if isinstance(item, tuple) else (int(item), 0, int(item))
            clip, continues = self.index.clip(i, epoch), False
        sc = self.index.scenes[clip.scene_index]
        _, gt_reader = self._source(sc.dataroot, sc.version)
        frames = self.load_frames(clip, continues)
        photometric = None
        yaw = 0.0
        if self.augment is not None:
            if self.augment.photometric is not None:
                photometric = aug.draw_photometric(self.augment.photometric, len(CAMERA_CHANNELS), seed)
            yaw = aug.draw_scene_yaw(self.augment.scene_yaw_deg, seed)
        out = []
        depth = self.model_config.depth.enabled
        for k, fs in enumerate(frames):
            x = frame_set_arrays(fs, self.rectifier, reset=(k == 0 and not continues))
            gt = gt_reader.for_frame_set(fs, with_lidar=depth)
            if gt.road is None and self.require_road:
                raise ValueError(f"{sc.dataroot}: scene {sc.scene} has no road geometry file; training needs one "
                                 "(pass require_road=False to train with empty road targets)")
            t = frame_target_arrays(gt, fs, self.rectifier)
            if depth:  # in the camera frames, before the scene yaw turns the ego frame (depth does not change)
                t.depth_bins = frame_depth_bins(gt.lidar_points, fs, x, self.model_config)
            x, t = rotate_frame(x, t, yaw)
            if photometric is not None:
                x.images = aug.apply_photometric(x.images, photometric) * torch.as_tensor(x.camera_mask, dtype=torch.float32)[:, None, None, None]
            out.append((x.to_inputs(), to_targets(t, self.model_config.grid, self.road_upsample, self.road_thickness)))
        return out


@dataclass(frozen=True)
class ClipData:
    """The scenes of the training dataroots and the clip index over them."""

    scenes: list  # replay.nuscenes.clips.SceneCycles
    roots: list[tuple[str, str]]  # (dataroot, version) of each dataroot
    index: ClipIndex


def clip_data(dataroots: Sequence[str | Path], version: str, split: str | None, keyframes_only: bool, clip_length: int,
              clip_stride: int | None, drop_prob: float, max_skip: int, seed: int) -> ClipData:
    """The scenes of `split` (None: all) in every dataroot, as the replay plans them, and their clip index;
    ValueError naming a dataroot without such a scene."""
    scenes, roots = [], []
    for root in dataroots:
        src = NuScenesSource(root, version, keyframes_only=keyframes_only, split=split)
        found = scenes_from_source(src)
        if not found:
            raise ValueError(f"{root} has no scene of split {split or 'all'} with images")
        scenes.extend(found)
        roots.append((str(src.dataroot), version))
    index = ClipIndex(scenes, clip_length, stride=clip_stride, drop_prob=drop_prob, max_skip=max_skip, seed=seed)
    return ClipData(scenes, roots, index)
