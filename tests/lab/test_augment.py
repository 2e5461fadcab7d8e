"""Augmentation: photometric jitter is seeded and per camera; the scene rotation keeps every pixel on its world point."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lab import augment as aug


def test_photometric_seeded_per_camera_and_bounded():
    cfg = aug.PhotometricConfig()
    imgs = torch.rand(6, 3, 8, 12)
    p1, p2 = aug.draw_photometric(cfg, 6, seed=5), aug.draw_photometric(cfg, 6, seed=5)
    out1, out2 = aug.apply_photometric(imgs, p1), aug.apply_photometric(imgs, p2)
    torch.testing.assert_close(out1, out2)
    assert out1.min() >= 0 and out1.max() <= 1
    assert len(set(np.round(p1.brightness, 6))) == 6, "each camera draws its own jitter"
    assert not torch.allclose(out1, aug.apply_photometric(imgs, aug.draw_photometric(cfg, 6, seed=6)))


def test_photometric_identity_and_reference_formula():
    imgs = torch.rand(2, 3, 4, 5) * 0.5 + 0.25
    ident = aug.PhotometricParams(np.zeros(2), np.ones(2), np.ones(2), np.ones((2, 3)))
    torch.testing.assert_close(aug.apply_photometric(imgs, ident), imgs)
    # brightness only: a plain offset; contrast only: scaled about the per-camera mean
    p = aug.PhotometricParams(np.array([0.1, -0.1]), np.ones(2), np.ones(2), np.ones((2, 3)))
    torch.testing.assert_close(aug.apply_photometric(imgs, p), (imgs + torch.tensor([0.1, -0.1]).view(2, 1, 1, 1)).clamp(0, 1))
    p = aug.PhotometricParams(np.zeros(2), np.array([1.2, 0.8]), np.ones(2), np.ones((2, 3)))
    m = imgs.mean(dim=(1, 2, 3), keepdim=True)
    ref = (m + torch.tensor([1.2, 0.8]).view(2, 1, 1, 1) * (imgs - m)).clamp(0, 1)
    torch.testing.assert_close(aug.apply_photometric(imgs, p), ref)
    with pytest.raises(ValueError, match="cameras"):
        aug.apply_photometric(torch.rand(3, 3, 4, 4), p)


def _project(k: np.ndarray, cam_to_ego: np.ndarray, p_ego: np.ndarray) -> np.ndarray:
    pc = np.linalg.inv(cam_to_ego) @ np.append(p_ego, 1.0)
    uvw = k @ pc[:3]
    return uvw[:2] / uvw[2]


def test_scene_rotation_keeps_pixels_and_global_positions():
    rng = np.random.default_rng(0)
    yaw = math.radians(12.0)
    k = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    cam_to_ego = np.eye(4)
    cam_to_ego[:3, :3] = np.array([[0.0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # looking forward
    cam_to_ego[:3, 3] = [1.5, 0.1, 1.6]
    ego_to_global = aug.yaw_matrix(0.7)
    ego_to_global[:3, 3] = [100.0, 200.0, 0.5]
    boxes = np.array([[20.0, 3.0, 0.8, 1.9, 4.5, 1.6, 0.3, 4.0, -1.0], [35.0, -6.0, 1.0, 2.0, 5.0, 1.7, -2.9, 0.0, 2.0]])

    boxes_r = aug.rotate_boxes(boxes, yaw)
    cam_r = aug.rotate_extrinsics(cam_to_ego, yaw)
    pose_r = aug.rotate_ego_pose(ego_to_global, yaw)
    for b, br in zip(boxes, boxes_r):
        np.testing.assert_allclose(_project(k, cam_to_ego, b[:3]), _project(k, cam_r, br[:3]), atol=1e-6)
        np.testing.assert_allclose(ego_to_global @ np.append(b[:3], 1), pose_r @ np.append(br[:3], 1), atol=1e-6)
        # heading and velocity in global coordinates are unchanged
        g = lambda pose, yaw_, v: (math.atan2(pose[1, 0], pose[0, 0]) + yaw_, pose[:2, :2] @ v)  # noqa: E731
        h0, v0 = g(ego_to_global, b[6], b[7:9])
        h1, v1 = g(pose_r, br[6], br[7:9])
        assert abs((h0 - h1 + math.pi) % (2 * math.pi) - math.pi) < 1e-6
        np.testing.assert_allclose(v0, v1, atol=1e-6)
    assert np.all(np.abs(boxes_r[:, 6]) <= math.pi)
    line = rng.normal(size=(5, 2)) * 10
    np.testing.assert_allclose(aug.rotate_points_2d(line, yaw), aug.rotate_boxes(np.c_[line, np.zeros((5, 7))], yaw)[:, :2], atol=1e-5)
    kin = np.array([10.0, 0.5, 0.0, 1.0, 2.0, 0.0, 0.1], np.float32)
    kr = aug.rotate_kinematics(kin, yaw)
    assert kr[6] == pytest.approx(0.1) and np.linalg.norm(kr[:3]) == pytest.approx(np.linalg.norm(kin[:3]), rel=1e-6)


def test_scene_yaw_draw():
    assert aug.draw_scene_yaw(0.0, 3) == 0.0
    draws = [aug.draw_scene_yaw(10.0, s) for s in range(50)]
    assert max(abs(d) for d in draws) <= math.radians(10.0) and len(set(draws)) == 50
    assert aug.draw_scene_yaw(10.0, 4) == aug.draw_scene_yaw(10.0, 4)
