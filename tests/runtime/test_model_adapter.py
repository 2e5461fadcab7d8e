"""The real BEVStreamModel behind the runtime's stages (in process, random weights, small inputs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from runtime.model import ModelFactory
from runtime.stages import BackboneStage, BevStage, TickMeta
from tests.runtime.fakes import make_frame_set


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
