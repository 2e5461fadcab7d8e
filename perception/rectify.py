"""Rectify: warp each camera image into a canonical virtual camera (seed Part 2, "Transformer + Rectify").

Every camera slot gets one virtual camera: the same intrinsic matrix for all slots (sized for the model
input) and the slot's nominal orientation (its yaw about the ego z axis, zero pitch and roll). A real
camera differs from it by a rotation about its own centre, so the warp is the exact homography
``p_real ~ K_real R_real^T R_nom K_can^-1 p_can``. The sampling grid depends only on the calibration and
the image sizes, so it is computed once per (calibration, size) and cached; per frame it is one
``grid_sample``. Large inputs are first shrunk with an anti-aliased resize to about the output scale,
so the bilinear warp does not alias. Switched off, the rectifier only resizes and scales the intrinsics.

Pixel convention: integer pixel coordinates are pixel centres (OpenCV / nuScenes ``view_points``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from schema.camera import scale_intrinsic
from schema.messages import CAMERA_CHANNELS

# Camera optical frame (x right, y down, z forward) -> ego frame (x forward, y left, z up), yaw 0.
CAM_TO_EGO_BASE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

# Nominal yaw (degrees, counter-clockwise about ego z) of each nuScenes rig slot's optical axis.
NOMINAL_YAW_DEG: dict[str, float] = {
    "CAM_FRONT": 0.0,
    "CAM_FRONT_RIGHT": -57.0,
    "CAM_BACK_RIGHT": -112.0,
    "CAM_BACK": 180.0,
    "CAM_BACK_LEFT": 109.0,
    "CAM_FRONT_LEFT": 55.0,
}


@dataclass(frozen=True)
class RectifyConfig:
    enabled: bool = True  # False: resize only (intrinsics scaled, real rotation kept)
    image_size: tuple[int, int] = (176, 320)  # (H, W) of the model input (fits the 50 ms tick: bench/model.py)
    focal: float = 252.0  # canonical focal length in output pixels (nuScenes front ~1266 px at 1600 wide)
    nominal_yaw: str = "slot"  # "slot": NOMINAL_YAW_DEG table; "calibration": yaw of the camera's own axis

    def __post_init__(self) -> None:
        if len(self.image_size) != 2 or min(self.image_size) < 16:
            raise ValueError(f"RectifyConfig.image_size must be (H, W) >= 16, got {self.image_size}")
        if self.focal <= 0:
            raise ValueError(f"RectifyConfig.focal must be positive, got {self.focal}")
        if self.nominal_yaw not in ("slot", "calibration"):
            raise ValueError(f"RectifyConfig.nominal_yaw must be 'slot' or 'calibration', got {self.nominal_yaw!r}")


@dataclass(frozen=True)
class RectifiedCameras:
    """What the network sees: images and the calibration that goes with them."""

    images: torch.Tensor  # (Ncam, 3, H, W) float in [0, 1]
    intrinsics: torch.Tensor  # (Ncam, 3, 3) float32
    cam_to_ego: torch.Tensor  # (Ncam, 4, 4) float32


def canonical_intrinsic(image_size: tuple[int, int], focal: float) -> np.ndarray:
    """(3, 3) pinhole with the principal point at the image centre."""
    h, w = image_size
    return np.array([[focal, 0.0, (w - 1) / 2.0], [0.0, focal, (h - 1) / 2.0], [0.0, 0.0, 1.0]])


def yaw_rotation(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def nominal_rotation(yaw: float) -> np.ndarray:
    """(3, 3) camera->ego rotation of a level camera looking along ego yaw `yaw` (radians)."""
    return yaw_rotation(yaw) @ CAM_TO_EGO_BASE


def optical_axis_yaw(cam_to_ego_rot: np.ndarray) -> float:
    """Yaw (radians) of a camera's optical axis (its z axis) in the ego frame."""
    axis = cam_to_ego_rot[:, 2]
    return math.atan2(axis[1], axis[0])


def rectify_pixel_map(
    k_src: np.ndarray, r_src: np.ndarray, k_dst: np.ndarray, r_dst: np.ndarray, dst_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """For every destination pixel, the source pixel seeing the same ray.

    k_*: (3, 3) intrinsics; r_*: (3, 3) camera->ego rotations (cameras share their centre).
    Returns (H, W, 2) source (u, v) and (H, W) bool: the ray lies in front of the source camera.
    """
    h, w = dst_size
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # (H, W, 3)
    homography = k_src @ r_src.T @ r_dst @ np.linalg.inv(k_dst)
    src = pix @ homography.T  # (H, W, 3)
    front = src[..., 2] > 1e-6
    z = np.where(front, src[..., 2], 1.0)
    return src[..., :2] / z[..., None], front


def pixels_to_grid(uv: np.ndarray, valid: np.ndarray, src_size: tuple[int, int]) -> torch.Tensor:
    """(H, W, 2) pixel coords -> (H, W, 2) grid_sample coords (align_corners=False); invalid -> outside."""
    h, w = src_size
    gx = (2.0 * uv[..., 0] + 1.0) / w - 1.0
    gy = (2.0 * uv[..., 1] + 1.0) / h - 1.0
    grid = np.stack([gx, gy], axis=-1)
    grid[~valid] = -4.0  # well outside [-1, 1]: zeros padding
    return torch.from_numpy(grid.astype(np.float32))


def prescale_size(config: RectifyConfig, k: np.ndarray, src_size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) the rectifier first shrinks an image of `src_size` with intrinsic `k` to (anti-aliased):
    about the canonical scale, never larger; with rectification off, the output size."""
    if not config.enabled:
        return tuple(config.image_size)
    s = min(1.0, 1.25 * config.focal / float(k[0, 0]))
    return max(1, round(src_size[0] * s)), max(1, round(src_size[1] * s))


class Rectifier:
    """Warps a rig's images into the canonical cameras; caches one sampling grid per calibration."""

    def __init__(self, config: RectifyConfig = RectifyConfig(), channels: Sequence[str] = CAMERA_CHANNELS) -> None:
        self.config = config
        self.channels = tuple(channels)
        for ch in self.channels:
            if config.nominal_yaw == "slot" and ch not in NOMINAL_YAW_DEG:
                raise ValueError(f"Rectifier: no nominal yaw for channel {ch!r}; known: {sorted(NOMINAL_YAW_DEG)}")
        self.k_canonical = canonical_intrinsic(config.image_size, config.focal)
        self._cache: dict[tuple, tuple[torch.Tensor, tuple[int, int], np.ndarray, np.ndarray]] = {}

    def nominal_rotation_for(self, channel: str, cam_to_ego_rot: np.ndarray) -> np.ndarray:
        if self.config.nominal_yaw == "slot":
            return nominal_rotation(math.radians(NOMINAL_YAW_DEG[channel]))
        return nominal_rotation(optical_axis_yaw(cam_to_ego_rot))

    def _plan(self, channel: str, k: np.ndarray, cam_to_ego: np.ndarray, src_size: tuple[int, int]):
        """(grid or None, prescaled size, output intrinsic, output cam->ego rotation), cached."""
        key = (channel, src_size, k.astype(np.float64).tobytes(), cam_to_ego[:3, :3].astype(np.float64).tobytes())
        plan = self._cache.get(key)
        if plan is not None:
            return plan
        out_h, out_w = self.config.image_size
        src_h, src_w = src_size
        rot = cam_to_ego[:3, :3].astype(np.float64)
        if not self.config.enabled:
            k_out = scale_intrinsic(k, out_w / src_w, out_h / src_h)
            plan = (None, (out_h, out_w), k_out, rot)
        else:
            # Shrink (anti-aliased) to about the canonical scale first; never enlarge.
            pre_h, pre_w = prescale_size(self.config, k, src_size)
            k_pre = scale_intrinsic(k, pre_w / src_w, pre_h / src_h)
            r_nom = self.nominal_rotation_for(channel, rot)
            uv, valid = rectify_pixel_map(k_pre, rot, self.k_canonical, r_nom, self.config.image_size)
            plan = (pixels_to_grid(uv, valid, (pre_h, pre_w)), (pre_h, pre_w), self.k_canonical.copy(), r_nom)
        if len(self._cache) > 64:  # calibrations rarely change; bound the cache anyway
            self._cache.clear()
        self._cache[key] = plan
        return plan

    def rectify_one(self, channel: str, image: torch.Tensor, intrinsic: np.ndarray, cam_to_ego: np.ndarray):
        """image (3, H, W) uint8 or float in [0, 1] -> ((3, h, w) float, (3, 3) K, (3, 3) R).

        A CameraFrame's (H, W, 3) uint8 array passes as `torch.from_numpy(a).permute(2, 0, 1)`: that
        channels-last view is the fastest input for the anti-aliased shrink."""
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"Rectifier: image of {channel} must be (3, H, W), got {tuple(image.shape)}")
        grid, pre_size, k_out, r_out = self._plan(channel, np.asarray(intrinsic), np.asarray(cam_to_ego), tuple(image.shape[-2:]))
        x = image[None]  # (1, 3, H, W); uint8 stays uint8 through the shrink (torch's fast anti-aliased path)
        if tuple(x.shape[-2:]) != pre_size:
            x = F.interpolate(x, size=pre_size, mode="bilinear", align_corners=False, antialias=True)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if grid is not None:
            x = F.grid_sample(x, grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)
        return x[0].clamp_(0.0, 1.0), k_out, r_out

    def __call__(
        self, images: Sequence[torch.Tensor], intrinsics: Sequence[np.ndarray], cam_to_ego: Sequence[np.ndarray]
    ) -> RectifiedCameras:
        """One image per channel (in `self.channels` order) with its own (3, 3) K and (4, 4) sensor->ego."""
        if not (len(images) == len(intrinsics) == len(cam_to_ego) == len(self.channels)):
            raise ValueError(
                f"Rectifier: expected {len(self.channels)} images/intrinsics/extrinsics, got "
                f"{len(images)}/{len(intrinsics)}/{len(cam_to_ego)}"
            )
        outs, ks, ts = [], [], []
        for ch, img, k, ext in zip(self.channels, images, intrinsics, cam_to_ego):
            ext = np.asarray(ext, dtype=np.float64)
            out, k_out, r_out = self.rectify_one(ch, img, k, ext)
            t = np.eye(4)
            t[:3, :3] = r_out
            t[:3, 3] = ext[:3, 3]  # same optical centre: rectification is a rotation about it
            outs.append(out)
            ks.append(k_out)
            ts.append(t)
        return RectifiedCameras(
            images=torch.stack(outs),
            intrinsics=torch.from_numpy(np.stack(ks)).float(),
            cam_to_ego=torch.from_numpy(np.stack(ts)).float(),
        )
