"""Training augmentation: photometric jitter per camera, and a BEV-consistent rotation of the whole scene.

Both are drawn once per clip from an explicit seed and applied alike to every frame of the clip
(a camera's gain does not jump between frames; a rotated scene must stay rotated for the video
module's ego-motion alignment to hold).

The scene rotation turns the ego frame by `yaw` about z: every ego-frame quantity (camera
extrinsics, boxes, velocities, road polylines, kinematics) is rotated by R(yaw) and the ego pose
becomes ego_to_global @ R(-yaw), so global coordinates and the images are unchanged: the same
camera pixel still sees the same world point.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class PhotometricConfig:
    brightness: float = 0.2  # additive offset drawn from [-b, b] (images in [0, 1])
    contrast: float = 0.2  # factor drawn from [1 - c, 1 + c] about the image mean
    saturation: float = 0.2  # factor drawn from [1 - s, 1 + s] about the grey image
    hue_gain: float = 0.05  # per-channel gain drawn from [1 - h, 1 + h] (white balance / colour cast)

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation", "hue_gain"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"PhotometricConfig.{name} must be in [0, 1), got {v}")


@dataclass(frozen=True)
class PhotometricParams:
    """Per-camera draws: (Ncam,) brightness, contrast, saturation and (Ncam, 3) channel gains."""

    brightness: np.ndarray
    contrast: np.ndarray
    saturation: np.ndarray
    gains: np.ndarray


def draw_photometric(cfg: PhotometricConfig, num_cameras: int, seed: int) -> PhotometricParams:
    rng = np.random.default_rng(seed)
    u = lambda r, *shape: rng.uniform(-r, r, size=shape)  # noqa: E731
    return PhotometricParams(
        brightness=u(cfg.brightness, num_cameras),
        contrast=1.0 + u(cfg.contrast, num_cameras),
        saturation=1.0 + u(cfg.saturation, num_cameras),
        gains=1.0 + u(cfg.hue_gain, num_cameras, 3),
    )


def apply_photometric(images: torch.Tensor, params: PhotometricParams) -> torch.Tensor:
    """(Ncam, 3, H, W) float [0, 1] -> jittered copy, clamped to [0, 1]. Camera k gets params[k]."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"apply_photometric: images must be (Ncam, 3, H, W), got {tuple(images.shape)}")
    n = images.shape[0]
    if len(params.brightness) != n:
        raise ValueError(f"apply_photometric: params for {len(params.brightness)} cameras, images for {n}")
    f = lambda a: torch.as_tensor(a, dtype=images.dtype).view(n, -1, 1, 1)  # noqa: E731
    x = images * f(params.gains)  # (Ncam, 3, H, W)
    grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])  # (Ncam, 1, H, W)
    x = grey + f(params.saturation) * (x - grey)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + f(params.contrast) * (x - mean) + f(params.brightness)
    return x.clamp(0.0, 1.0)


# ---- BEV-consistent scene rotation ------------------------------------------------------------------------


def yaw_matrix(yaw: float) -> np.ndarray:
    """(4, 4) rotation about z by `yaw` radians."""
    c, s = math.cos(yaw), math.sin(yaw)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    return m


def rotate_boxes(boxes: np.ndarray, yaw: float) -> np.ndarray:
    """(N, 9) x, y, z, w, l, h, yaw, vx, vy -> the same boxes in a frame rotated by `yaw` (centres, headings, velocities)."""
    b = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 9)
    r = yaw_matrix(yaw)[:2, :2]
    b[:, 0:2] = b[:, 0:2] @ r.T
    b[:, 7:9] = b[:, 7:9] @ r.T
    b[:, 6] = (b[:, 6] + yaw + math.pi) % (2 * math.pi) - math.pi
    return b.astype(np.asarray(boxes).dtype if np.asarray(boxes).dtype.kind == "f" else np.float32)


def rotate_points_2d(points: np.ndarray, yaw: float) -> np.ndarray:
    """(K, 2) -> (K, 2) rotated by `yaw` about the origin."""
    r = yaw_matrix(yaw)[:2, :2]
    return (np.asarray(points, dtype=np.float64) @ r.T).astype(np.float32)


def rotate_extrinsics(cam_to_ego: np.ndarray, yaw: float) -> np.ndarray:
    """(..., 4, 4) camera->ego -> camera->rotated ego."""
    return (yaw_matrix(yaw) @ np.asarray(cam_to_ego, dtype=np.float64)).astype(np.asarray(cam_to_ego).dtype)


def rotate_ego_pose(ego_to_global: np.ndarray, yaw: float) -> np.ndarray:
    """(4, 4) ego->global -> rotated ego->global (= ego_to_global @ R(-yaw)): global points stay where they are."""
    return np.asarray(ego_to_global, dtype=np.float64) @ yaw_matrix(-yaw)


def rotate_kinematics(kin: np.ndarray, yaw: float) -> np.ndarray:
    """(7,) vx, vy, vz, ax, ay, az, yaw_rate -> velocity and acceleration rotated; the yaw rate is unchanged."""
    k = np.array(kin, dtype=np.float64, copy=True)
    r = yaw_matrix(yaw)[:3, :3]
    k[0:3] = r @ k[0:3]
    k[3:6] = r @ k[3:6]
    return k.astype(np.float32)


def draw_scene_yaw(max_deg: float, seed: int) -> float:
    """Uniform in [-max_deg, max_deg] degrees, returned in radians (0 when max_deg is 0)."""
    if max_deg <= 0:
        return 0.0
    return math.radians(float(np.random.default_rng((seed, 17)).uniform(-max_deg, max_deg)))
