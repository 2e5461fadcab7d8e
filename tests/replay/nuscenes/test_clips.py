"""Clip index: cycles of a real scene, clip lengths and order, seeded frame drops."""
from __future__ import annotations

import numpy as np
import pytest

from replay.nuscenes.clips import ClipIndex, Cycle, SceneCycles, load_nusc, scene_cycles, scenes_of_dataroots
from schema.messages import CAMERA_CHANNELS


def _scene(name: str, n: int) -> SceneCycles:
    cycles = tuple(Cycle(1_000_000 + 83_333 * k, None, tuple(f"{name}-{k}-{c}" for c in range(6))) for k in range(n))
    return SceneCycles("/root", "v1.0-mini", name, cycles)


def test_clip_count_length_and_order():
    index = ClipIndex([_scene("a", 20), _scene("b", 7), _scene("c", 3)], length=4, stride=2)
    # starts 0,2,..,16 in a (9), 0,2 in b (2), none in c
    assert len(index) == 9 + 2
    for i in range(len(index)):
        clip = index[i]
        assert len(clip) == 4
        assert list(clip.cycles) == list(range(clip.cycles[0], clip.cycles[0] + 4))
    sc, cycles = index.cycles_of(index[9])
    assert sc.scene == "b" and [c.timestamp_us for c in cycles] == sorted(c.timestamp_us for c in cycles)


def test_drops_are_seeded_bounded_and_vary():
    scenes = [_scene("a", 40)]
    index = ClipIndex(scenes, length=6, stride=3, drop_prob=0.4, max_skip=2, seed=7)
    again = ClipIndex(scenes, length=6, stride=3, drop_prob=0.4, max_skip=2, seed=7)
    other = ClipIndex(scenes, length=6, stride=3, drop_prob=0.4, max_skip=2, seed=8)
    gaps = []
    for i in range(len(index)):
        c = index.clip(i, epoch=1)
        assert c == again.clip(i, epoch=1), "same seed, epoch and index: same clip"
        steps = np.diff(c.cycles)
        assert len(c) == 6 and np.all(steps >= 1) and np.all(steps <= 3)
        assert 0 <= c.cycles[0] and c.cycles[-1] < 40
        gaps.extend(steps.tolist())
    assert set(gaps) == {1, 2, 3}, "variable time steps occur"
    assert any(index.clip(i, 1) != other.clip(i, 1) for i in range(len(index))), "the seed matters"
    assert any(index.clip(i, 1) != index.clip(i, 2) for i in range(len(index))), "the epoch matters"
    # near a scene's end a gappy clip still fits
    short = ClipIndex([_scene("s", 6)], length=6, drop_prob=0.9, max_skip=3)
    assert short.clip(0).cycles == (0, 1, 2, 3, 4, 5)


def test_no_drops_without_drop_prob():
    index = ClipIndex([_scene("a", 10)], length=3, stride=1)
    assert index.clip(4, epoch=3).cycles == (4, 5, 6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="no clip of length 9"):
        ClipIndex([_scene("a", 5)], length=9)
    with pytest.raises(ValueError, match="drop_prob"):
        ClipIndex([_scene("a", 5)], length=2, drop_prob=1.0)
    with pytest.raises(IndexError):
        ClipIndex([_scene("a", 5)], length=2).clip(99)


def test_real_scene_cycles(real_scene_root):
    nusc = load_nusc(str(real_scene_root), "v1.0-trainval")
    name = nusc.scene[0]["name"]
    every = scene_cycles(nusc, name, require_files=False)
    stamps = [c.timestamp_us for c in every]
    assert stamps == sorted(stamps)
    assert len(every) == len([sd for sd in nusc.sample_data if sd["channel"] == "CAM_FRONT"])
    keyframes = [c for c in every if c.is_keyframe]
    assert len(keyframes) == len(nusc.sample) == 40
    for c in every[:60]:
        front = nusc.get("sample_data", c.sample_data[0])
        for ch, token in zip(CAMERA_CHANNELS, c.sample_data):
            if token is None:
                continue
            rec = nusc.get("sample_data", token)
            assert rec["channel"] == ch
            assert abs(rec["timestamp"] - front["timestamp"]) <= 42_000
            assert rec["is_key_frame"] == c.is_keyframe
        if c.is_keyframe:
            assert c.timestamp_us == nusc.get("sample", c.sample_token)["timestamp"]
            assert all(t is not None for t in c.sample_data)
    # only the keyframe images exist: with the file check only keyframe cycles remain
    present = scene_cycles(nusc, name)
    assert [c.sample_token for c in present] == [c.sample_token for c in keyframes]
    (sc,) = scenes_of_dataroots([(str(real_scene_root), "v1.0-trainval")], keyframes_only=True)
    assert len(sc.cycles) == 40 and ClipIndex([sc], length=4).clip(0).cycles == (0, 1, 2, 3)


# ---- clips through the training data path on the simulator's export (sim_dataset: tests/replay/conftest.py) ----

TINY_MODEL = {
    "grid": {"x_min": -25.6, "x_max": 25.6, "y_min": -25.6, "y_max": 25.6, "resolution": 1.6},
    "rectify": {"image_size": [64, 112], "focal": 92.0},
    "backbone": {"widths": [8, 8, 16, 16, 16], "out_channels": 16, "skip_channels": 8},
    "seg": {"channels": 8},
    "bev": {"channels": 16, "heads": 2},
    "video": {"world_cells": 48, "hidden_channels": 8, "key_channels": 8},
}


def test_sim_cycles_match_the_replay_and_clip_targets_are_complete(sim_dataset):
    import torch

    from lab.dataset import ClipDataset, scenes_from_source
    from perception.config import model_config_from_dict
    from perception.model import IGNORE_INDEX
    from replay.nuscenes.source import NuScenesSource

    torch.set_num_threads(1)
    src = NuScenesSource(sim_dataset.dataroot, sim_dataset.version)
    scenes = scenes_from_source(src)
    assert [s.scene for s in scenes] == src.scene_names
    replayed = [fs.timestamp_us for fs in src.frame_sets() if fs.scene == scenes[0].scene]
    assert [c.timestamp_us for c in scenes[0].cycles] == replayed, "training cycles are the replay's frame sets"
    keyframes = [c for c in scenes[0].cycles if c.is_keyframe]
    assert len(keyframes) == len([s for s in src.nusc.sample if s["scene_token"] == src.scene_records[0]["token"]])

    index = ClipIndex(scenes, length=3, stride=20, drop_prob=0.3, seed=1)
    cfg = model_config_from_dict(TINY_MODEL)
    ds = ClipDataset(index, [(str(sim_dataset.dataroot), sim_dataset.version)], cfg)
    clip = ds[(1, 0, 5)]
    assert len(clip) == 3
    for x, t in clip:
        x.validate(6, cfg.image_size)
        assert float(t.road_masks.sum()) > 0, "the export's road geometry reaches the road targets"
        assert float((t.seg_labels != IGNORE_INDEX).float().mean()) > 0.5, "label images reach the seg targets"
        assert t.gt_boxes[0].shape[0] > 0 and t.gt_boxes[0].shape[1] == 9


def test_real_model_overfits_one_sim_clip(sim_dataset, tmp_path):
    """The whole data path + BEVStreamModel.forward_clip + the loop: a tiny model's loss falls on one repeated clip."""
    import torch

    from lab.dataset import AugmentConfig, ClipDataset, collate_clips, scenes_from_source
    from perception.config import model_config_from_dict
    from perception.model import BEVStreamModel
    from lab.training import TrainConfig, read_curve, train
    from replay.nuscenes.source import NuScenesSource

    torch.set_num_threads(1)
    src = NuScenesSource(sim_dataset.dataroot, sim_dataset.version, scenes=[sim_dataset.summary.scenes[0][0]])
    index = ClipIndex(scenes_from_source(src)[:1], length=2, stride=1000)  # a single clip
    cfg = model_config_from_dict(TINY_MODEL)
    ds = ClipDataset(index, [(str(sim_dataset.dataroot), sim_dataset.version)], cfg, augment=AugmentConfig(photometric=None))
    torch.manual_seed(0)
    train(BEVStreamModel(cfg), ds, collate_clips,
          TrainConfig(steps=25, lr=3e-3, warmup_steps=2, num_workers=0, progress=False, schedule="constant"), tmp_path)
    rows = read_curve(tmp_path / "curve.jsonl")
    first, last = rows[0], rows[-1]
    assert last["total"] < 0.8 * first["total"], (first, last)
    assert last["seg"] < first["seg"] and last["road"] < first["road"]


def test_walk_clips_are_one_consecutive_drive_cut_into_clips():
    index = ClipIndex([_scene("a", 50), _scene("b", 30)], length=4, drop_prob=0.3, max_skip=2)
    for scene in (0, 1):
        walk = index.walk_clips(scene, (5, 0, 0))
        assert walk == index.walk_clips(scene, (5, 0, 0)), "a function of the key"
        assert walk != index.walk_clips(scene, (5, 1, 0)), "another epoch walks differently"
        cycles = [c for clip in walk for c in clip.cycles]
        assert all(len(clip) == 4 and clip.scene_index == scene for clip in walk)
        steps = np.diff(cycles)
        assert np.all(steps >= 1) and np.all(steps <= 3), "consecutive clips continue each other, gaps bounded"
        assert cycles[0] < 4, "the drive starts near the scene's start"
        n = len(index.scenes[scene].cycles)
        assert cycles[-1] < n and n - cycles[-1] <= 4 * 3, "it runs to the scene's end (a short tail left out)"
    no_drops = ClipIndex([_scene("a", 11)], length=3)
    walk = no_drops.walk_clips(0, (0,))
    start = walk[0].cycles[0]
    assert [c.cycles for c in walk] == [tuple(range(s, s + 3)) for s in range(start, 11 - 2, 3)]


def test_clip_depth_targets_from_the_sim_lidar(sim_dataset):
    """With the depth head on, keyframes get lidar depth bins in every camera (near at the bottom of the
    image, where the ground is), frames between keyframes none; the scene-yaw augmentation leaves them be."""
    import torch

    from lab.dataset import AugmentConfig, ClipDataset, scenes_from_source
    from perception.config import model_config_from_dict
    from perception.depth import IGNORE_INDEX
    from replay.nuscenes.source import NuScenesSource

    torch.set_num_threads(1)
    src = NuScenesSource(sim_dataset.dataroot, sim_dataset.version, scenes=[sim_dataset.summary.scenes[0][0]])
    scenes = scenes_from_source(src)
    index = ClipIndex(scenes, length=6, stride=1000)  # one clip: a keyframe and the five sweeps after it
    model = {k: v for k, v in TINY_MODEL.items() if k != "rectify"}  # the default input size: 11 x 20 feature cells
    cfg = model_config_from_dict({**model, "depth": {"enabled": True}})
    roots = [(str(sim_dataset.dataroot), sim_dataset.version)]
    clip = index.clip(0, 0)
    keyframe = [scenes[0].cycles[c].is_keyframe for c in clip.cycles]
    assert keyframe[0] and not any(keyframe[1:])
    items = ClipDataset(index, roots, cfg, augment=AugmentConfig(photometric=None))[(0, 0, 0)]
    turned = ClipDataset(index, roots, cfg, augment=AugmentConfig(photometric=None, scene_yaw_deg=20.0))[(0, 0, 3)]
    for (_, t), (_, t_turned), key in zip(items, turned, keyframe):
        bins = t.depth_bins[0]  # (6, 11, 20)
        assert bins.shape == (6, *(s // 16 for s in cfg.image_size))
        torch.testing.assert_close(t_turned.depth_bins, t.depth_bins)
        if not key:
            assert (bins == IGNORE_INDEX).all()
            continue
        seen = bins != IGNORE_INDEX
        assert seen.float().mean() > 0.3 and seen.flatten(1).any(1).all(), "every camera gets returns"
        both = seen[:, -1] & seen[:, 7]  # (6, 20) columns seen in the bottom row and in row 7
        bottom, middle = bins[:, -1][both].float(), bins[:, 7][both].float()
        assert len(bottom) > 60 and (bottom <= middle).float().mean() > 0.9 and bottom.mean() < middle.mean()
