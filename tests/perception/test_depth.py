"""Depth supervision: bins, targets against a slow per-point reference and the devkit's projection, the
head's loss, and the model with the head (training only, weights without it still load). Depth-aware
attention: the window probabilities against a per-point integral, and the model that reads them."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from perception.bev_encoder import bilinear_taps
from perception.depth import (IGNORE_INDEX, CameraGeometry, DepthHead, DepthHeadConfig, depth_bin_targets, depth_window_ratio,
                              depth_window_weights, project_points)
from perception.model import BEVStreamModel
from tests.perception.model_fixtures import canonical_rig, one_thread, synthetic_targets, synthetic_tick, tiny_config  # noqa: F401 (fixture)

CFG = DepthHeadConfig(enabled=True, min_m=1.0, max_m=61.0, bins=60)


def test_bins_are_uniform_and_bounded():
    depth = np.array([0.5, 1.0, 1.999, 2.0, 30.5, 60.999, 61.0, np.inf])
    np.testing.assert_array_equal(CFG.bin_of(depth), [IGNORE_INDEX, 0, 0, 1, 29, 59, IGNORE_INDEX, IGNORE_INDEX])
    np.testing.assert_allclose(CFG.bin_centres()[[0, 59]], [1.5, 60.5])
    assert np.all(CFG.bin_of(CFG.bin_centres()) == np.arange(60))
    with pytest.raises(ValueError, match="min_m < max_m"):
        DepthHeadConfig(min_m=5.0, max_m=5.0)


def _rig(image_size, ego_pose):
    intr, ext = canonical_rig(dataclasses.replace(tiny_config(), rectify=dataclasses.replace(tiny_config().rectify, image_size=image_size)))
    return [CameraGeometry(intr[k].numpy(), ext[k].numpy(), ego_pose) for k in range(6)]


def _reference_targets(points, cameras, image_size, stride, cfg):
    """One point at a time: project, find its cell, keep the nearest depth; then bin."""
    hf, wf = image_size[0] // stride, image_size[1] // stride
    nearest = np.full((len(cameras), hf, wf), np.inf)
    for k, cam in enumerate(cameras):
        if cam is None:
            continue
        g2c = np.linalg.inv(cam.ego_to_global @ cam.cam_to_ego)
        for p in points:
            x, y, z = g2c[:3, :3] @ p + g2c[:3, 3]
            if z <= 1e-3:
                continue
            u, v, w = cam.intrinsic @ np.array([x, y, z])
            col, row = int(np.floor(u / w / stride)), int(np.floor(v / w / stride))
            if 0 <= row < hf and 0 <= col < wf and cfg.min_m <= z < cfg.max_m:
                nearest[k, row, col] = min(nearest[k, row, col], z)
    out = np.full(nearest.shape, IGNORE_INDEX, np.int64)
    seen = np.isfinite(nearest)
    out[seen] = cfg.bin_of(nearest[seen])
    return out


def test_targets_match_a_per_point_reference():
    rng = np.random.default_rng(0)
    ego = np.eye(4)
    ego[:3, :3] = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # heading +y
    ego[:3, 3] = [100.0, -40.0, 0.0]
    cameras = _rig((96, 176), ego)
    cameras[4] = None  # an absent camera
    points = np.concatenate([
        ego[:3, 3] + rng.uniform([-70, -70, -1], [70, 70, 4], size=(3000, 3)),  # everywhere around
        ego[:3, 3] + rng.uniform([-3, 8, 0], [3, 9, 2], size=(300, 3)),  # a dense wall ahead: many per cell
    ])
    got = depth_bin_targets(points, cameras, (96, 176), 16, CFG)
    want = _reference_targets(points, cameras, (96, 176), 16, CFG)
    assert got.shape == (6, 6, 11) and got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), want)
    assert (got[4] == IGNORE_INDEX).all()
    assert (got != IGNORE_INDEX).sum() > 100
    assert (depth_bin_targets(None, cameras, (96, 176), 16, CFG) == IGNORE_INDEX).all()


def test_the_nearest_return_of_a_cell_wins():
    ego = np.eye(4)
    cam = _rig((96, 176), ego)[0]  # CAM_FRONT
    ray = cam.cam_to_ego[:3, :3] @ np.array([0.0, 0.0, 1.0])  # its optical axis, in the ego (= global) frame
    centre = cam.cam_to_ego[:3, 3]
    points = np.stack([centre + 20.3 * ray, centre + 7.6 * ray, centre + 40.0 * ray])
    got = depth_bin_targets(points, [cam], (96, 176), 16, CFG)[0]
    u, v = cam.intrinsic[0, 2], cam.intrinsic[1, 2]
    assert got[int(v // 16), int(u // 16)] == 6  # 7.6 m: bin [7, 8)
    assert (got != IGNORE_INDEX).sum() == 1


def test_projection_matches_the_devkits(real_scene_root):
    """project_points against nuscenes-devkit's own chain (map_pointcloud_to_image's) on a real camera."""
    from nuscenes.utils.geometry_utils import view_points
    from pyquaternion import Quaternion

    from replay.nuscenes.source import NuScenesSource

    src = NuScenesSource(real_scene_root, "v1.0-trainval")
    nusc = src.nusc
    sd = nusc.get("sample_data", nusc.sample[0]["data"]["CAM_FRONT"])
    cs, pose = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]), nusc.get("ego_pose", sd["ego_pose_token"])
    rng = np.random.default_rng(1)
    points = np.asarray(pose["translation"]) + rng.uniform([-40, -40, -2], [40, 40, 5], size=(500, 3))
    p = points.T - np.asarray(pose["translation"])[:, None]  # the devkit's order: global -> ego -> camera
    p = Quaternion(pose["rotation"]).rotation_matrix.T @ p
    p = Quaternion(cs["rotation"]).rotation_matrix.T @ (p - np.asarray(cs["translation"])[:, None])
    front = p[2] > 1e-3
    want_uv = view_points(p[:, front], np.array(cs["camera_intrinsic"]), normalize=True)[:2].T

    def matrix(record):
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = Quaternion(record["rotation"]).rotation_matrix, record["translation"]
        return m

    uv, depth = project_points(points, CameraGeometry(np.array(cs["camera_intrinsic"]), matrix(cs), matrix(pose)))
    np.testing.assert_allclose(uv, want_uv, atol=1e-6)
    np.testing.assert_allclose(depth, p[2, front], atol=1e-9)


def test_loss_is_cross_entropy_over_supervised_cells_of_seen_cameras():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 60, 3, 5, generator=g, requires_grad=True)
    targets = torch.full((2, 6, 3, 5), IGNORE_INDEX)
    targets[0, 1, 2, 3], targets[1, 5, 0, 0], targets[1, 2, 1, 1] = 7, 59, 0
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 2] = False  # this camera's supervised cell does not count
    got = DepthHead.loss(logits, targets, mask)
    want = F.cross_entropy(torch.stack([logits[0, 1, :, 2, 3], logits[1, 5, :, 0, 0]]), torch.tensor([7, 59]))
    torch.testing.assert_close(got, want)
    none = DepthHead.loss(logits, torch.full_like(targets, IGNORE_INDEX))
    assert none.item() == 0.0
    none.backward()  # a gradient path even with nothing to learn
    assert logits.grad is not None


def test_model_trains_the_head_and_ships_without_it(one_thread, tmp_path):
    from perception.config import model_config_from_dict, model_config_to_dict
    from perception.checkpoint import export_weights, load_checkpoint, load_weights, save_checkpoint

    cfg = dataclasses.replace(tiny_config(video=False), depth=dataclasses.replace(CFG, hidden_channels=8, loss_weight=0.5))
    torch.manual_seed(0)
    model = BEVStreamModel(cfg)
    x = synthetic_tick(cfg, 0)
    t = synthetic_targets(cfg, x, 0)
    hf, wf = cfg.image_size[0] // 16, cfg.image_size[1] // 16
    t.depth_bins = torch.randint(0, 60, (1, 6, hf, wf))
    model.train()
    losses = model.forward_clip([x], [t])
    assert losses["depth"] > 0 and "depth" in losses
    others = sum(w * losses[k] for k, w in (("seg", 1.0), ("det_cls", 2.0), ("det_reg", 1.0), ("road", 1.0)))
    torch.testing.assert_close(losses["total"], others + 0.5 * losses["depth"])
    losses["total"].backward()
    assert model.depth_head.net[0].weight.grad.abs().sum() > 0
    assert model.backbone.stem[0].weight.grad.abs().sum() > 0, "the depth loss reaches the backbone"
    t.depth_bins = None  # a tick without returns: a zero term, still present
    assert model.forward_clip([x], [t])["depth"].item() == 0.0

    # weights trained without the head load (it starts fresh) and infer exactly what they did
    plain = BEVStreamModel(tiny_config(video=False)).eval()
    path = tmp_path / "plain.pt"
    torch.save({"model": plain.state_dict(), "step": 0}, path)
    grown = BEVStreamModel(cfg)
    assert sorted({k.split(".")[0] for k in load_weights(grown, path)}) == ["depth_head"]
    grown.eval()
    with torch.no_grad():
        a, _ = plain(x)
        b, _ = grown(x)
    assert b.depth_logits is None, "inference does not run the head"
    torch.testing.assert_close(a.detection["cls_logits"], b.detection["cls_logits"])

    # the shipped file leaves the head out and switches it off: it loads into a model without one
    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda _: 1.0)
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", model, optim, sched, 1, {"model": model_config_to_dict(cfg)})
    shipped = load_checkpoint(export_weights(ckpt, tmp_path / "shipped.pt"))
    assert not any(k.startswith("depth_head.") for k in shipped["model"])
    assert not model_config_from_dict(shipped["config"]["model"]).depth.enabled
    BEVStreamModel(tiny_config(video=False)).load_state_dict(shipped["model"])  # strict


def _window_reference(logits: torch.Tensor, cam: int, grid_xy: torch.Tensor, depth: float, cfg: DepthHeadConfig) -> float:
    """One point: bilinear-sampled bin probabilities at its pixel, integrated over the window as the
    overlap of the window with each bin (uniform density inside a bin)."""
    probs = logits[cam:cam + 1].double().softmax(dim=1)  # (1, D, Hf, Wf)
    p = F.grid_sample(probs, grid_xy.double().view(1, 1, 1, 2), mode="bilinear", padding_mode="zeros", align_corners=False).flatten()
    width = (cfg.max_m - cfg.min_m) / cfg.bins
    lo, hi = depth - cfg.window_m / 2, depth + cfg.window_m / 2
    total = 0.0
    for k in range(cfg.bins):
        a, b = cfg.min_m + k * width, cfg.min_m + (k + 1) * width
        total += float(p[k]) * max(0.0, min(hi, b) - max(lo, a)) / width
    return total


def test_depth_window_weights_equal_a_per_point_integral():
    cfg = DepthHeadConfig(enabled=True, attention=True, min_m=1.0, max_m=21.0, bins=10, window_m=1.6)
    torch.manual_seed(0)
    logits = 2 * torch.randn(3, cfg.bins, 4, 6)  # (Ncam, D, Hf, Wf)
    cam = torch.randint(0, 3, (200,))
    grid_xy = torch.rand(200, 2) * 2.4 - 1.2  # some points near or past the image border
    depth = torch.rand(200) * 26 - 2  # windows inside, straddling and outside [min_m, max_m)
    taps, weights = bilinear_taps(cam, grid_xy, (4, 6))
    got = depth_window_weights(logits, taps, weights, depth, cfg)
    want = torch.tensor([_window_reference(logits, int(c), g, float(d), cfg) for c, g, d in zip(cam, grid_xy, depth)], dtype=torch.float64)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)


def test_depth_window_weights_of_known_distributions():
    cfg = DepthHeadConfig(enabled=True, attention=True, min_m=1.0, max_m=61.0, bins=60, window_m=1.6)
    taps = torch.tensor([[5, 5, 5, 5]] * 4)  # one pixel, all its weight
    weights = torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 4)
    depth = torch.tensor([30.5, 35.5, 0.0, 70.0])
    uniform = depth_window_weights(torch.zeros(1, 60, 2, 4), taps, weights, depth, cfg)
    torch.testing.assert_close(uniform, torch.tensor([1.6 / 60, 1.6 / 60, 0.0, 0.0]))  # nothing below 1 m or beyond 61 m
    peaked = torch.full((1, 60, 2, 4), -30.0)
    peaked[0, 29] = 30.0  # the surface lies in the bin 30-31 m
    got = depth_window_weights(peaked, taps, weights, depth, cfg)
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    ratio = depth_window_ratio(torch.zeros(1, 60, 2, 4), taps, weights, depth, cfg)  # the encoder's input
    torch.testing.assert_close(ratio, torch.tensor([1.0, 1.0, 0.0, 0.0]))  # undecided: 1
    torch.testing.assert_close(depth_window_ratio(peaked, taps, weights, depth, cfg), got * 60 / 1.6)
    with pytest.raises(ValueError, match="enabled"):
        DepthHeadConfig(attention=True)


def test_model_with_depth_attention_grows_from_plain_weights_and_ships_the_head(one_thread, tmp_path):
    from perception.config import model_config_from_dict, model_config_to_dict
    from perception.checkpoint import export_weights, load_checkpoint, load_weights, save_checkpoint

    plain_cfg = tiny_config(video=True)
    cfg = dataclasses.replace(plain_cfg, depth=dataclasses.replace(CFG, hidden_channels=8, attention=True))
    torch.manual_seed(0)
    plain = BEVStreamModel(plain_cfg).eval()
    path = tmp_path / "plain.pt"
    torch.save({"model": plain.state_dict(), "step": 0}, path)
    model = BEVStreamModel(cfg)
    grown = load_weights(model, path)
    assert sorted({k.split(".")[0] for k in grown}) == ["bev_encoder", "depth_head"]
    model.eval()
    x = synthetic_tick(plain_cfg, 0)
    with torch.no_grad():
        a, _ = plain(x)
        b, _ = model(x)
    assert b.depth_logits is not None, "the encoder reads the head at inference"
    torch.testing.assert_close(a.detection["cls_logits"], b.detection["cls_logits"])  # the new output starts at zero

    optim = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda _: 1.0)
    ckpt = save_checkpoint(tmp_path / "ckpt.pt", model, optim, sched, 1, {"model": model_config_to_dict(cfg)})
    shipped = load_checkpoint(export_weights(ckpt, tmp_path / "shipped.pt"))
    assert model_config_from_dict(shipped["config"]["model"]).depth.attention
    BEVStreamModel(cfg).load_state_dict(shipped["model"])  # strict: the head is in the file
