"""Frame sets -> ModelInputs/Targets, label rectification, the clip dataset on the real scene and on a sim export."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from lab.dataset import AugmentConfig, ClipDataset, collate_clips, scenes_from_source
from lab.samplers import StreamItem
from perception.inputs import frame_set_inputs, rectify_label
from perception.model import IGNORE_INDEX, ModelConfig
from perception.rectify import Rectifier, RectifyConfig
from replay.nuscenes.clips import ClipIndex
from schema.messages import CAMERA_CHANNELS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def real_source(real_scene_root):
    from replay.nuscenes.source import NuScenesSource

    return NuScenesSource(real_scene_root, "v1.0-trainval", keyframes_only=True)


@pytest.fixture(scope="module")
def real_frames(real_source):
    it = real_source.frame_sets()
    return [next(it) for _ in range(2)]


def test_frame_set_inputs_shapes_and_missing_camera(real_frames):
    cfg = ModelConfig()
    rect = Rectifier(cfg.rectify)
    fs = real_frames[0]
    x = frame_set_inputs(fs, rect)
    x.validate(6, cfg.image_size)
    assert bool(x.camera_mask.all()) and bool(x.reset[0]) == fs.new_scene
    np.testing.assert_allclose(x.ego_to_global[0].numpy(), fs.ego_to_global.matrix)
    assert x.timestamp_s[0].item() == pytest.approx(fs.timestamp_us * 1e-6)
    # camera translation kept, rotation = the rectifier's canonical one
    np.testing.assert_allclose(x.cam_to_ego[0, 0, :3, 3].numpy(), fs.cameras[0].sensor_to_ego.translation, atol=1e-5)
    degraded = dataclasses.replace(fs, cameras=fs.cameras[1:], missing=(CAMERA_CHANNELS[0],))
    y = frame_set_inputs(degraded, rect)
    assert not bool(y.camera_mask[0, 0]) and bool(y.camera_mask[0, 1:].all())
    assert float(y.images[0, 0].abs().sum()) == 0.0
    torch.testing.assert_close(y.images[0, 1:], x.images[0, 1:])
    torch.testing.assert_close(y.intrinsics[0, 0], torch.eye(3))


@pytest.mark.parametrize("enabled", [True, False])
def test_rectify_label_follows_the_image_warp(real_frames, enabled):
    rect = Rectifier(RectifyConfig(enabled=enabled))
    cam = real_frames[0].cameras[1]
    h, w = cam.image.shape[:2]
    # left half class 2, right half class 7: the label must land where the image's dark/bright halves land
    label = np.full((h, w), 2, np.uint8)
    label[:, w // 2:] = 7
    image = np.zeros((h, w, 3), np.uint8)
    image[:, w // 2:] = 255
    out = rectify_label(rect, cam.channel, label, cam.intrinsic, cam.sensor_to_ego.matrix)
    img, _, _ = rect.rectify_one(cam.channel, torch.from_numpy(image).permute(2, 0, 1), cam.intrinsic, cam.sensor_to_ego.matrix)
    ones, _, _ = rect.rectify_one(cam.channel, torch.full((3, h, w), 255, dtype=torch.uint8), cam.intrinsic, cam.sensor_to_ego.matrix)
    bright, inside = img[0] > 0.99, ones[0] > 0.99
    dark = (img[0] < 0.01) & inside
    assert out.shape == img.shape[1:]
    assert bool((out[bright] == 7).all()) and bool((out[dark] == 2).all())
    assert bool((out[ones[0] < 0.01] == IGNORE_INDEX).all())
    if enabled:
        assert int((out == IGNORE_INDEX).sum()) > 0  # the warp leaves regions outside the source image


def test_clip_dataset_on_real_scene(real_source, real_scene_root):
    from lab.groundtruth import GroundTruth

    scenes = scenes_from_source(real_source)
    assert len(scenes[0].cycles) == 40
    index = ClipIndex(scenes, length=2, stride=2)
    cfg = ModelConfig()
    ds = ClipDataset(index, [(str(real_scene_root), "v1.0-trainval")], cfg, augment=None, require_road=False)
    clip = ds[(3, 0, 11)]
    assert len(clip) == 2
    frames = ds.load_frames(index.clip(3))
    assert [f.timestamp_us for f in frames] == [scenes[0].cycles[c].timestamp_us for c in index.clip(3).cycles]
    reader = GroundTruth(real_source.nusc, cfg.grid, min_points=1)
    for (x, t), fs in zip(clip, frames):
        x.validate(6, cfg.image_size)
        ref = reader.for_frame_set(fs).boxes
        np.testing.assert_allclose(t.gt_boxes[0].numpy(), ref.boxes)
        np.testing.assert_array_equal(t.gt_labels[0].numpy(), ref.labels)
        assert t.road_masks.shape[:2] == (1, 2) and float(t.road_masks.sum()) == 0.0  # no road files: empty
        assert bool((t.seg_labels == IGNORE_INDEX).all())  # no label images: ignore everywhere
    assert [bool(x.reset[0]) for x, _ in clip] == [True, False]
    continued = ds[StreamItem(index.clip(3), 11, continues=True)]  # streaming: the clip goes on from the previous one
    assert [bool(x.reset[0]) for x, _ in continued] == [False, False]
    torch.testing.assert_close(continued[1][0].images, clip[1][0].images)
    with pytest.raises(ValueError, match="road geometry"):
        ClipDataset(index, [(str(real_scene_root), "v1.0-trainval")], cfg)[(0, 0, 0)]

    # augmentation: seeded, photometric changes images only, the scene rotation moves boxes and extrinsics
    aug_ds = ClipDataset(index, [(str(real_scene_root), "v1.0-trainval")], cfg,
                         augment=AugmentConfig(scene_yaw_deg=10.0), require_road=False)
    a, b = aug_ds[(3, 0, 11)], aug_ds[(3, 0, 11)]
    torch.testing.assert_close(a[0][0].images, b[0][0].images)
    assert not torch.allclose(a[0][0].images, clip[0][0].images)
    r0 = np.linalg.norm(clip[0][1].gt_boxes[0][:, :2].numpy(), axis=1)
    r1 = np.linalg.norm(a[0][1].gt_boxes[0][:, :2].numpy(), axis=1)
    np.testing.assert_allclose(r0, r1, atol=1e-3)  # a rotation about the ego origin keeps ranges
    assert not np.allclose(clip[0][1].gt_boxes[0].numpy(), a[0][1].gt_boxes[0].numpy())

    xs, ts = collate_clips([clip, a])
    assert len(xs) == 2 and xs[0].images.shape[0] == 2 and len(ts[1].gt_boxes) == 2
    xs[1].validate(6, cfg.image_size)


# The ClipDataset on the simulator's export is tested in tests/replay/test_clips.py (the sim_dataset fixture lives there).
