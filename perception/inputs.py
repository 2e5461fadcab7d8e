"""Frame sets -> ModelInputs: the model's one preprocessing.

`frame_set_inputs` is the one preprocessing of a FrameSet into the model's input: every present
camera rectified by perception.rectify.Rectifier (`rectify_one`), absent cameras as zero images with
identity calibration and mask False (as runtime/stages.BackboneStage lays them out). Training uses it;
the runtime's model adapter makes the same Rectifier calls per camera (tests/runtime/test_model_adapter.py),
and offline evaluation runs the runtime's stages, so the network never sees a preprocessing it was not
trained on.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from perception.model import IGNORE_INDEX, ModelInputs
from perception.rectify import Rectifier
from schema.messages import CAMERA_CHANNELS, FrameSet


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
