"""Frame sets -> ModelInputs and Targets, and the clip dataset that feeds the training loop.

`frame_set_inputs` is the one preprocessing of a FrameSet into the model's input: every present
camera rectified by perception.rectify.Rectifier (`rectify_one`), absent cameras as zero images with
identity calibration and mask False (as runtime/stages.BackboneStage lays them out). Training and
offline evaluation both use it; the runtime's model adapter should call it too (or the same
Rectifier calls), so the network never sees a preprocessing it was not trained on.

`ClipDataset` reads clips through replay.nuscenes_source.NuScenesSource (the replay loader, not a
second one), the ground truth through replay.groundtruth, and applies perception.augment. With the
depth head enabled it also projects each keyframe's lidar returns into the rectified cameras
(`frame_depth_bins`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from perception import augment as aug
from perception.classes import ROAD_CLASSES
from perception.depth import CameraGeometry, depth_bin_targets
from perception.grid import BEVGrid
from perception.model import IGNORE_INDEX, ModelConfig, ModelInputs, Targets
from perception.rectify import Rectifier
from perception.training import StreamItem
from runtime.messages import CAMERA_CHANNELS, FrameSet


# ---- one frame set ------------------------------------------------------------------------------------


@dataclass
class FrameArrays:
    """One frame set as the model's per-stream arrays (no batch dim), before batching."""

    images: torch.Tensor  # (Ncam, 3, H, W) float [0, 1]
    intrinsics: np.ndarray  # (Ncam, 3, 3) float32, of the rectified images
    cam_to_ego: np.ndarray  # (Ncam, 4, 4) float32, of the rectified cameras
    camera_mask: np.ndarray  # (Ncam,) bool
    ego_to_global: np.ndarray  # (4, 4) float64
    timestamp_s: float
    kinematics: np.ndarray  # (7,) float32
    reset: bool

    def to_inputs(self) -> ModelInputs:
        """Batched (B=1) ModelInputs."""
        return ModelInputs(
            images=self.images[None],
            intrinsics=torch.as_tensor(self.intrinsics, dtype=torch.float32)[None],
            cam_to_ego=torch.as_tensor(self.cam_to_ego, dtype=torch.float32)[None],
            camera_mask=torch.as_tensor(self.camera_mask, dtype=torch.bool)[None],
            ego_to_global=torch.as_tensor(self.ego_to_global, dtype=torch.float64)[None],
            timestamp_s=torch.tensor([self.timestamp_s], dtype=torch.float64),
            kinematics=torch.as_tensor(self.kinematics, dtype=torch.float32)[None],
            reset=torch.tensor([bool(self.reset)]),
        )


def frame_set_arrays(fs: FrameSet, rectifier: Rectifier, reset: bool | None = None) -> FrameArrays:
    """Rectify the present cameras of a frame set into their CAMERA_CHANNELS slots (absent: zeros, mask False)."""
    h, w = rectifier.config.image_size
    n = len(CAMERA_CHANNELS)
    images = torch.zeros(n, 3, h, w)
    intr = np.tile(np.eye(3, dtype=np.float32), (n, 1, 1))
    ext = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    mask = np.zeros(n, dtype=bool)
    for cam in fs.cameras:
        k = CAMERA_CHANNELS.index(cam.channel)
        img = torch.from_numpy(np.array(cam.image, dtype=np.uint8, copy=True)).permute(2, 0, 1)  # (3, H, W) uint8
        c2e = cam.sensor_to_ego.matrix
        out, k_out, r_out = rectifier.rectify_one(cam.channel, img, cam.intrinsic, c2e)
        images[k] = out
        intr[k] = k_out
        ext[k, :3, :3] = r_out
        ext[k, :3, 3] = c2e[:3, 3]  # rectification rotates about the optical centre
        mask[k] = True
    return FrameArrays(
        images=images,
        intrinsics=intr,
        cam_to_ego=ext,
        camera_mask=mask,
        ego_to_global=fs.ego_to_global.matrix,
        timestamp_s=fs.timestamp_us * 1e-6,
        kinematics=fs.kinematics.as_array(),
        reset=fs.new_scene if reset is None else reset,
    )


def frame_set_inputs(fs: FrameSet, rectifier: Rectifier, reset: bool | None = None) -> ModelInputs:
    """A FrameSet as batched (B=1) ModelInputs: the model's preprocessing."""
    return frame_set_arrays(fs, rectifier, reset).to_inputs()


def rectify_label(rectifier: Rectifier, channel: str, label: np.ndarray, intrinsic: np.ndarray, cam_to_ego: np.ndarray) -> torch.Tensor:
    """(H, W) uint8 label image -> (h, w) int64 in the rectified camera, nearest neighbour; 255 outside the source image.

    Uses the rectifier's own sampling plan (the warp of the image it goes with).
    """
    lab = torch.from_numpy(np.asarray(label, dtype=np.int64)).float()[None, None] + 1.0  # (1, 1, H, W); 0 = outside
    grid, pre_size, _, _ = rectifier._plan(channel, np.asarray(intrinsic), np.asarray(cam_to_ego), tuple(lab.shape[-2:]))
    if tuple(lab.shape[-2:]) != tuple(pre_size):
        lab = F.interpolate(lab, size=pre_size, mode="nearest")
    if grid is not None:
        lab = F.grid_sample(lab, grid[None], mode="nearest", padding_mode="zeros", align_corners=False)
    out = lab[0, 0].round().long() - 1
    out[out < 0] = IGNORE_INDEX
    return out


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
    from perception.backbone import Backbone

    cameras: list[CameraGeometry | None] = [None] * len(CAMERA_CHANNELS)
    for cam in fs.cameras:
        k = CAMERA_CHANNELS.index(cam.channel)
        cameras[k] = CameraGeometry(x.intrinsics[k], x.cam_to_ego[k], cam.ego_to_global.matrix)
    return depth_bin_targets(points_global, cameras, config.image_size, Backbone.stride, config.depth)


def frame_target_arrays(gt, fs: FrameSet, rectifier: Rectifier) -> FrameTargetArrays:
    """replay.groundtruth.FrameGroundTruth of a frame set -> arrays in the model's input geometry."""
    h, w = rectifier.config.image_size
    seg = torch.full((len(CAMERA_CHANNELS), h, w), IGNORE_INDEX, dtype=torch.int64)
    for cam, label in zip(fs.cameras, gt.seg_labels):
        if label is not None:
            seg[CAMERA_CHANNELS.index(cam.channel)] = rectify_label(rectifier, cam.channel, label, cam.intrinsic, cam.sensor_to_ego.matrix)
    road = gt.road if gt.road is not None else {c: [] for c in ROAD_CLASSES}
    return FrameTargetArrays(gt.boxes.boxes, gt.boxes.labels, road, seg)


def to_targets(t: FrameTargetArrays, grid: BEVGrid, road_upsample: int, road_thickness_m: float) -> Targets:
    """Batched (B=1) Targets; road polylines rasterised as RoadHead.loss expects."""
    from perception.road import rasterize_road

    road = rasterize_road(t.road, grid, road_upsample, road_thickness_m)  # (2, H_r, W_r)
    return Targets(
        gt_boxes=[torch.as_tensor(np.asarray(t.boxes, np.float32))],
        gt_labels=[torch.as_tensor(np.asarray(t.labels, np.int64))],
        road_masks=torch.from_numpy(road)[None],
        seg_labels=t.seg_labels[None],
        depth_bins=None if t.depth_bins is None else t.depth_bins[None],
    )


def rotate_frame(x: FrameArrays, t: FrameTargetArrays, yaw: float) -> tuple[FrameArrays, FrameTargetArrays]:
    """Turn the ego frame by `yaw` (perception.augment): extrinsics, pose, kinematics, boxes, road; images unchanged."""
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
    """replay.clips.SceneCycles of every scene of a NuScenesSource, from the replay's own cycle plan
    (so training clips are exactly the frame sets the runtime replays)."""
    from replay.clips import Cycle, SceneCycles

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
        index,  # replay.clips.ClipIndex over scenes_from_source(...) of the dataroots below
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
        from perception.road import RoadHeadConfig

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
            from replay.groundtruth import GroundTruth
            from replay.nuscenes_source import NuScenesSource

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
