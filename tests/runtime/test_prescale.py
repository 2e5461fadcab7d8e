"""Shrinking images before the object store (runtime/prescale.py) gives the model exactly the input
the rectifier makes from the full-resolution image."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import torch
from pyquaternion import Quaternion

from perception.rectify import RectifyConfig, Rectifier
from schema.messages import CAMERA_CHANNELS, Pose
from runtime.prescale import Prescaler
from tests.runtime.fakes import make_frame_set


def _nuscenes_like_set():
    """Six 1600x900 cameras with the nuScenes front camera's intrinsic, yawed around the rig."""
    fs = make_frame_set(0, size=(900, 1600))
    k = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])
    optical = Quaternion(matrix=np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]))
    cams = tuple(replace(c, intrinsic=k, sensor_to_ego=Pose(np.array([1.5, 0.0, 1.6]),
                                                            Quaternion(axis=[0, 0, 1], angle=-i * np.pi / 3) * optical))
                 for i, c in enumerate(fs.cameras))
    return replace(fs, cameras=cams)


def _rectified(fs):
    rect = Rectifier(RectifyConfig(), tuple(c.channel for c in fs.cameras))
    out = rect([torch.from_numpy(np.ascontiguousarray(c.image)).permute(2, 0, 1) for c in fs.cameras],
               [c.intrinsic for c in fs.cameras], [c.sensor_to_ego.matrix for c in fs.cameras])
    return out.images.numpy(), out.intrinsics.numpy(), out.cam_to_ego.numpy()


def test_prescaled_set_rectifies_to_the_same_model_input():
    torch.set_num_threads(1)
    fs = _nuscenes_like_set()
    small = Prescaler(RectifyConfig())(fs)
    full_bytes = sum(c.image.nbytes for c in fs.cameras)
    small_bytes = sum(c.image.nbytes for c in small.cameras)
    assert small_bytes * 10 < full_bytes  # what the object store copies
    assert [c.channel for c in small.cameras] == list(CAMERA_CHANNELS)
    for a, b in zip(_rectified(fs), _rectified(small)):
        np.testing.assert_array_equal(a, b)


def test_prescaler_leaves_small_or_bad_cameras_alone():
    pre = Prescaler(RectifyConfig())
    small = make_frame_set(1, size=(24, 40))  # focal 50 px: below the canonical scale, never enlarged
    assert all(a.image is b.image for a, b in zip(small.cameras, pre(small).cameras))
    fs = _nuscenes_like_set()
    bad = replace(fs, cameras=(replace(fs.cameras[0], intrinsic=np.zeros((3, 3))),) + fs.cameras[1:])
    out = pre(bad)
    assert out.cameras[0].image is bad.cameras[0].image and out.cameras[1].image.shape[0] < 900


def test_scaled_decode_gives_the_rectifier_nearly_the_same_input(real_scene_root):
    """pipeline.scaled_decode: a replayed JPEG decoded at a DCT scale, then prescaled, against the full decode."""
    from replay.nuscenes.source import NuScenesSource

    torch.set_num_threads(1)
    pre = Prescaler(RectifyConfig())
    src = NuScenesSource(real_scene_root, "v1.0-trainval", keyframes_only=True)
    full = pre(next(src.frame_sets()))
    src.decode_for(pre.needed_size)
    scaled = pre(next(src.frame_sets()))
    for a, b in zip(full.cameras, scaled.cameras):
        assert a.image.shape == b.image.shape
        np.testing.assert_allclose(a.intrinsic, b.intrinsic, rtol=1e-9)
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() < 1.0  # grey levels (measured: ~0.3)


def test_backbone_decode_shrinks_as_the_driver_prescaler_does():
    """Decoded in the backbone stage's pool and shrunk there (decode_images with Prescaler.shrink), a replay's
    JPEGs give the pixels and intrinsics the driver's decode + Prescaler gave: the same model input."""
    import io

    from PIL import Image

    from replay.jpeg import decode_encoded, encoded_jpeg
    from runtime.stages import TickMeta, decode_images

    fs = _nuscenes_like_set()
    cams = []
    for c in fs.cameras:
        buf = io.BytesIO()
        Image.fromarray(c.image[::2, ::2]).save(buf, format="JPEG", quality=90)  # 800x450, as scaled decode gives
        cams.append(replace(c, image=encoded_jpeg(buf.getvalue())[0], intrinsic=c.intrinsic * [[0.5], [0.5], [1]]))
    encoded = replace(fs, cameras=tuple(cams))
    decoded = replace(fs, cameras=tuple(replace(c, image=decode_encoded(c.image)) for c in cams))
    by_driver = Prescaler(RectifyConfig())(decoded)
    pool = ThreadPoolExecutor(2)
    images, meta, lost = decode_images([c.image for c in cams], TickMeta.from_frame_set(encoded), pool,
                                       Prescaler(RectifyConfig()).shrink)
    assert lost == () and images[0].shape[0] < 450  # shrunk
    for image, k, c in zip(images, meta.intrinsics, by_driver.cameras):
        np.testing.assert_array_equal(image, c.image)
        np.testing.assert_array_equal(k, c.intrinsic)
