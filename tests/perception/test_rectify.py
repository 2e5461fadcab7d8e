"""Rectify: identity on a canonical camera, rays preserved for a rotated camera, resize-only mode."""
from __future__ import annotations

import math

import numpy as np
import torch
from pyquaternion import Quaternion

from perception.rectify import NOMINAL_YAW_DEG, Rectifier, RectifyConfig, canonical_intrinsic, nominal_rotation, rectify_pixel_map
from schema.camera import scale_intrinsic
from schema.messages import CAMERA_CHANNELS

CFG = RectifyConfig(image_size=(96, 176), focal=140.0)


def _ext(rot: np.ndarray, t=(1.5, 0.0, 1.5)) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = t
    return m


def _smooth_image(k: np.ndarray, cam_to_ego: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Render (3, H, W) whose colour is a smooth function of each pixel's ego-frame ray direction."""
    h, w = size
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(k).T @ cam_to_ego[:3, :3].T
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    img = np.stack([0.5 + 0.4 * np.sin(3 * rays[..., 0]), 0.5 + 0.4 * np.cos(4 * rays[..., 1]), 0.5 + 0.4 * rays[..., 2]], 0)
    return torch.from_numpy(img).float()


def test_identity_when_calibration_is_canonical():
    rect = Rectifier(CFG)
    k = canonical_intrinsic(CFG.image_size, CFG.focal)
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, *CFG.image_size, generator=g) for _ in CAMERA_CHANNELS]
    exts = [_ext(nominal_rotation(math.radians(NOMINAL_YAW_DEG[c]))) for c in CAMERA_CHANNELS]
    out = rect(imgs, [k] * 6, exts)
    torch.testing.assert_close(out.images, torch.stack(imgs), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.cam_to_ego, torch.from_numpy(np.stack(exts)).float())


def test_pixel_map_preserves_rays_of_3d_points():
    """A 3D point seen at canonical pixel p_c is seen by the real (rotated) camera where the map says."""
    rng = np.random.default_rng(1)
    k_c = canonical_intrinsic(CFG.image_size, CFG.focal)
    r_nom = nominal_rotation(math.radians(-57.0))
    tilt = Quaternion(axis=[0.3, 1.0, 0.2], angle=math.radians(6.0)).rotation_matrix
    r_real = tilt @ r_nom
    k_real = np.array([[300.0, 0, 200.0], [0, 310.0, 110.0], [0, 0, 1]])
    centre = np.array([1.6, -0.5, 1.5])
    uv, valid = rectify_pixel_map(k_real, r_real, k_c, r_nom, CFG.image_size)
    for _ in range(50):
        i, j = rng.integers(0, CFG.image_size[0]), rng.integers(0, CFG.image_size[1])
        ray_cam = np.linalg.inv(k_c) @ np.array([j, i, 1.0])
        point = centre + r_nom @ ray_cam * rng.uniform(2, 40)  # ego frame, on the canonical pixel's ray
        in_real = r_real.T @ (point - centre)
        p = k_real @ in_real
        assert valid[i, j]
        np.testing.assert_allclose(uv[i, j], p[:2] / p[2], atol=1e-6)


def test_rectified_image_matches_the_canonical_view():
    """Rectify a rotated, differently-sized camera; every output pixel shows the colour of its canonical ray."""
    r_nom = nominal_rotation(math.radians(NOMINAL_YAW_DEG["CAM_FRONT_LEFT"]))
    r_real = Quaternion(axis=[1.0, 0.2, 0.5], angle=math.radians(5.0)).rotation_matrix @ r_nom
    k_real = np.array([[250.0, 0, 220.0], [0, 250.0, 120.0], [0, 0, 1]])  # bigger image, longer focal, wider view
    ext_real = _ext(r_real)
    img = _smooth_image(k_real, ext_real, (240, 440))
    out = Rectifier(CFG, channels=["CAM_FRONT_LEFT"])([img], [k_real], [ext_real])
    k_c = canonical_intrinsic(CFG.image_size, CFG.focal)
    expected = _smooth_image(k_c, _ext(r_nom), CFG.image_size)
    torch.testing.assert_close(out.images[0, :, 4:-4, 4:-4], expected[:, 4:-4, 4:-4], atol=0.01, rtol=0)
    np.testing.assert_allclose(out.intrinsics[0].numpy(), k_c, rtol=1e-6)
    np.testing.assert_allclose(out.cam_to_ego[0, :3, :3].numpy(), r_nom, atol=1e-6)


def test_disabled_only_resizes_and_scales_intrinsics():
    cfg = RectifyConfig(enabled=False, image_size=(96, 176))
    k = np.array([[400.0, 0, 351.0], [0, 400.0, 190.0], [0, 0, 1]])
    rot = nominal_rotation(0.3) @ Quaternion(axis=[1, 0, 0], angle=0.05).rotation_matrix
    img = torch.rand(3, 384, 704)
    out = Rectifier(cfg, channels=["CAM_FRONT"])([img], [k], [_ext(rot)])
    assert out.images.shape == (1, 3, 96, 176)
    np.testing.assert_allclose(out.cam_to_ego[0, :3, :3].numpy(), rot, atol=1e-6)  # real rotation kept
    # A pixel centre u maps to (u + 0.5) * s - 0.5 after a resize by s: the scaled K agrees.
    k2 = scale_intrinsic(k, 0.25, 0.25)
    point = np.array([0.7, -0.2, 5.0])
    p1, p2 = k @ point, k2 @ point
    np.testing.assert_allclose(p2[:2] / p2[2], (p1[:2] / p1[2] + 0.5) * 0.25 - 0.5, atol=1e-9)
    np.testing.assert_allclose(out.intrinsics[0].numpy(), k2, rtol=1e-6)


def test_sampling_grid_is_cached_per_calibration():
    rect = Rectifier(CFG, channels=["CAM_BACK"])
    k = np.array([[200.0, 0, 175.5], [0, 200.0, 95.5], [0, 0, 1]])
    ext = _ext(nominal_rotation(math.pi))
    a = rect([torch.rand(3, 192, 352)], [k], [ext])
    assert len(rect._cache) == 1
    b = rect([torch.rand(3, 192, 352)], [k], [ext])
    assert len(rect._cache) == 1
    assert a.images.shape == b.images.shape == (1, 3, *CFG.image_size)
