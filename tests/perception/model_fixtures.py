"""Tiny model configuration and synthetic ticks shared by the perception model tests."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from perception.backbone import BackboneConfig
from perception.bev_encoder import BEVEncoderConfig
from schema.classes import ROAD_CLASSES, SEG_CLASSES
from perception.detection import DetectionHeadConfig
from perception.grid import BEVGrid
from perception.model import ModelConfig, ModelInputs, Targets
from perception.rectify import NOMINAL_YAW_DEG, RectifyConfig, canonical_intrinsic, nominal_rotation
from perception.road import RoadHeadConfig
from perception.segmentation import SegHeadConfig
from perception.video import VideoConfig
from replay.sim.rig import REAL_CALIBRATION
from schema.messages import CAMERA_CHANNELS

TINY_GRID = BEVGrid(-12.8, 12.8, -12.8, 12.8, 1.6)  # 16 x 16 cells


# The same tiny model as runtime.yaml text, for the train/eval command tests.
TINY_MODEL_YAML = """
model:
  grid: {x_min: -25.6, x_max: 25.6, y_min: -25.6, y_max: 25.6, resolution: 1.6}
  rectify: {image_size: [64, 112], focal: 92.0}
  backbone: {widths: [8, 8, 16, 16, 16], out_channels: 16, skip_channels: 8}
  seg: {channels: 8}
  bev: {channels: 16, heads: 2}
  video: {world_cells: 48, hidden_channels: 8, key_channels: 8}
"""


def tiny_config(video: bool = True, attention: str = "sampled", fine_level: bool = False) -> ModelConfig:
    return ModelConfig(
        grid=TINY_GRID,
        rectify=RectifyConfig(image_size=(48, 96), focal=40.0),
        backbone=BackboneConfig(widths=(8, 8, 16, 16, 16), out_channels=16, skip_channels=8),
        seg=SegHeadConfig(channels=8, rates=(2,)),
        bev=BEVEncoderConfig(channels=16, heads=2, attention=attention, pillar_heights=(0.0, 1.5), fine_level=fine_level),
        video=VideoConfig(enabled=video, time_queue_length=2, space_queue_length=2, key_channels=4, hidden_channels=8, world_cells=32, recenter_cells=4),
        detection=DetectionHeadConfig(hidden_channels=16),
        road=RoadHeadConfig(hidden_channels=8, upsample=1),
    )


def canonical_rig(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(Ncam, 3, 3), (Ncam, 4, 4): the rectified cameras (canonical K, nominal yaw, real rig centres)."""
    k = canonical_intrinsic(cfg.image_size, cfg.rectify.focal)
    exts = []
    for ch in CAMERA_CHANNELS:
        m = np.eye(4)
        m[:3, :3] = nominal_rotation(math.radians(NOMINAL_YAW_DEG[ch]))
        m[:3, 3] = REAL_CALIBRATION[ch][0]
        exts.append(m)
    return torch.from_numpy(np.stack([k] * 6)).float(), torch.from_numpy(np.stack(exts)).float()


def pose(x: float, y: float, yaw: float) -> torch.Tensor:
    """(4, 4) float64 ego-to-world pose: at (x, y) on the ground, heading yaw about +z."""
    m = torch.eye(4, dtype=torch.float64)
    c, s = math.cos(yaw), math.sin(yaw)
    m[0, 0], m[0, 1], m[1, 0], m[1, 1] = c, -s, s, c
    m[0, 3], m[1, 3] = x, y
    return m


def synthetic_tick(cfg: ModelConfig, k: int, batch: int = 1, reset: bool | None = None, seed: int = 0) -> ModelInputs:
    """Tick k of a drive along x at 6 m/s, 12 Hz; images: coloured blocks that depend on k."""
    g = torch.Generator().manual_seed(seed * 1000 + k)
    h, w = cfg.image_size
    blocks = torch.rand(batch, 6, 3, h // 8, w // 8, generator=g)
    images = blocks.repeat_interleave(8, dim=-2).repeat_interleave(8, dim=-1)
    intr, ext = canonical_rig(cfg)
    poses = torch.stack([pose(0.5 * k + 3.0 * b, 0.1 * k, 0.02 * k) for b in range(batch)])
    kin = torch.tensor([[6.0, 0, 0, 0, 0, 0, 0.24]]).expand(batch, 7).clone()
    return ModelInputs(
        images=images,
        intrinsics=intr[None].expand(batch, 6, 3, 3).clone(),
        cam_to_ego=ext[None].expand(batch, 6, 4, 4).clone(),
        camera_mask=torch.ones(batch, 6, dtype=torch.bool),
        ego_to_global=poses,
        timestamp_s=torch.tensor([k / 12.0] * batch, dtype=torch.float64),
        kinematics=kin,
        reset=torch.tensor([k == 0 if reset is None else reset] * batch),
    )


def synthetic_targets(cfg: ModelConfig, inputs: ModelInputs, k: int) -> Targets:
    """Targets that follow the images: seg label = brightest channel of each block; a few boxes; two lines."""
    b = inputs.images.shape[0]
    seg = inputs.images.argmax(dim=2) + 2  # (B, Ncam, H, W) in {2, 3, 4} = road, lane_marking, road_edge
    seg[..., :4, :] = SEG_CLASSES.index("sky")
    boxes = torch.tensor([[5.0 - 0.5 * k, 3.0, 0.8, 1.9, 4.5, 1.6, 0.1, 6.0, 0.0], [-6.0, -4.0 + 0.2 * k, 0.9, 0.7, 0.7, 1.8, 1.5, 0.0, 1.0]])
    labels = torch.tensor([0, 5])
    road = torch.zeros(b, len(ROAD_CLASSES), *cfg.grid.shape)
    road[:, 0, :, 5 + (k % 2)] = 1.0
    road[:, 1, :, 12] = 1.0
    return Targets(gt_boxes=[boxes] * b, gt_labels=[labels] * b, road_masks=road, seg_labels=seg.long())


@pytest.fixture(autouse=False)
def one_thread():
    """Run a test on one torch thread: on a shared, loaded 2-core machine two threads are far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
