"""The real BEVStreamModel behind the runtime's stages (in process, random weights, small inputs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.model_adapter import ModelFactory
from runtime.stages import BackboneStage, BevStage, TickMeta
from tests.runtime.fakes import encode_as_they_arrive, make_frame_set


@pytest.fixture(scope="module")
def adapter():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    return ModelFactory({}, None)()


def test_stages_run_any_resolution_and_missing_cameras(adapter):
    bb, bev = BackboneStage(adapter), BevStage(adapter)
    h, w = adapter.model.config.image_size
    for i, (size, missing) in enumerate([((90, 160), ()), ((120, 300), ("CAM_BACK",))]):
        fs = make_frame_set(i, size=size, missing=missing, new_scene=(i == 0))
        meta = TickMeta.from_frame_set(fs)
        packet = bb.run([c.image for c in fs.cameras], meta)
        assert packet.feats.shape[:2] == (1, 6) and packet.camera_mask.sum() == 6 - len(missing)
        if missing:
            assert not packet.camera_mask[0, 3] and np.all(packet.feats[0, 3] == 0)
        assert packet.seg.shape == (6 - len(missing), h // 4, w // 4) and packet.seg.dtype == np.uint8
        r = bev.run(packet, meta)
        assert r.valid and r.missing == missing and r.detections_global.frame == "global"
        assert r.detections_ego.boxes.shape[1] == 9
        assert len(r.detections_ego.track_ids) == len(r.detections_ego)  # the model's tracker numbers every box


def test_checkpoint_restore_reproduces_the_next_tick(adapter):
    """State saved after tick k and restored into a fresh stage gives the same tick k+1."""
    bb = BackboneStage(adapter)
    sets = [make_frame_set(i, size=(90, 160), new_scene=(i == 0)) for i in range(4)]
    packets = [(bb.run([c.image for c in fs.cameras], TickMeta.from_frame_set(fs)), TickMeta.from_frame_set(fs)) for fs in sets]
    a = BevStage(adapter)
    for p, m in packets[:3]:
        a.run(p, m)
    saved = a.checkpoint()
    b = BevStage(adapter)
    b.restore(saved)
    ra, rb = a.run(*packets[3]), b.run(*packets[3])
    np.testing.assert_array_equal(ra.detections_ego.boxes, rb.detections_ego.boxes)
    assert a.checkpoint() == b.checkpoint()
    fresh = BevStage(adapter)
    fresh.run(*packets[3])
    assert fresh.checkpoint() != a.checkpoint()  # the state carries history: the test can fail


def test_per_camera_encoding_equals_the_batched_backbone(adapter):
    """Cameras are independent batch items of the backbone (eval mode): encoding each on its own as
    it arrives gives the features and labels of encoding the set at once (up to float rounding)."""
    from runtime.stages import packet_from_cameras

    bb = BackboneStage(adapter)
    fs = make_frame_set(0, size=(90, 160), missing=("CAM_FRONT_RIGHT",))
    meta = TickMeta.from_frame_set(fs)
    whole = bb.run([c.image for c in fs.cameras], meta)
    cams = encode_as_they_arrive(bb, fs.cameras)
    packet = packet_from_cameras(cams, meta.channels)
    np.testing.assert_allclose(packet.feats, whole.feats, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(packet.intrinsics, whole.intrinsics, rtol=1e-6)
    np.testing.assert_allclose(packet.cam_to_ego, whole.cam_to_ego, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(packet.camera_mask, whole.camera_mask)
    assert (packet.seg == whole.seg).mean() > 0.999


@pytest.mark.parametrize("threshold, expect", [(3.0, "vehicle.moving"), (5.0, "vehicle.parked")])
def test_decode_names_attributes_by_the_models_thresholds(threshold, expect):
    """A car decoded at 4 m/s is moving under a 3 m/s threshold and parked under 5 m/s (model.attributes)."""
    from perception.boxes import CODE_SIZE

    adapter = ModelFactory({"attributes": {"vehicle_moving_mps": threshold}}, None)()
    head = adapter.model.detection_head
    car = int(torch.nonzero(head.anchor_labels == 0)[0])  # an anchor of class 0, car
    logits = torch.full((1, head.anchors.shape[0], head.num_classes), -20.0)
    logits[0, car, 0] = 5.0
    deltas = torch.zeros(1, head.anchors.shape[0], CODE_SIZE)
    deltas[0, car, -2] = 4.0 / head.config.velocity_scale  # vx code: 4 m/s
    dets, _ = adapter.decode({"detection": {"cls_logits": logits, "box_deltas": deltas},
                              "road_logits": torch.full((1, 2, *adapter.model.road_head.out_shape), -10.0)})
    assert dets.names == ("car",) and dets.attributes == (expect,)
    assert dets.boxes[0, 7] == pytest.approx(4.0, abs=1e-4)


def test_the_runtime_preprocesses_a_frame_set_as_training_and_eval_do(adapter):
    """The adapter's per-camera rectification gives the pixels and geometry of perception.inputs.frame_set_arrays
    (training's and eval's preprocessing) for the cameras present; the network never sees another one."""
    from perception.inputs import frame_set_arrays
    from perception.rectify import Rectifier
    from schema.messages import CAMERA_CHANNELS

    fs = make_frame_set(3, size=(90, 160), missing=("CAM_BACK",))
    images, intr, ext = adapter.preprocess([c.image for c in fs.cameras], fs.channels,
                                           np.stack([c.intrinsic for c in fs.cameras]),
                                           np.stack([c.sensor_to_ego.matrix for c in fs.cameras]))  # (1, N, 3, H, W)
    ref = frame_set_arrays(fs, Rectifier(adapter.model.config.rectify))
    slots = [CAMERA_CHANNELS.index(c) for c in fs.channels]
    assert torch.equal(images[0], ref.images[slots])
    np.testing.assert_allclose(intr, ref.intrinsics[slots], rtol=1e-6)
    np.testing.assert_allclose(ext, ref.cam_to_ego[slots], rtol=1e-6, atol=1e-6)
    assert not ref.camera_mask[CAMERA_CHANNELS.index("CAM_BACK")]
