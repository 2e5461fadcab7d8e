"""Stage compute without Ray: per-camera encoding assembles the same packet as the set at once."""
from __future__ import annotations

import numpy as np
import pytest

from runtime.stages import BackboneStage, TickMeta, packet_from_cameras
from tests.runtime.fakes import CountingModel, encode_as_they_arrive, make_frame_set


@pytest.mark.parametrize("missing", [(), ("CAM_FRONT", "CAM_BACK_LEFT")])
def test_cameras_encoded_one_by_one_give_the_set_packet(missing):
    fs = make_frame_set(2, missing=missing)
    meta = TickMeta.from_frame_set(fs)
    stage = BackboneStage(CountingModel(), seg_stride=2)
    whole = stage.run([c.image for c in fs.cameras], meta)
    cams = encode_as_they_arrive(stage, fs.cameras)
    packet = packet_from_cameras(cams, meta.channels)
    np.testing.assert_allclose(packet.feats, whole.feats, rtol=1e-6, atol=1e-7)
    for name in ("intrinsics", "cam_to_ego", "camera_mask", "seg"):
        np.testing.assert_array_equal(getattr(packet, name), getattr(whole, name))
    assert packet.camera_mask.sum() == 6 - len(missing)
    assert [t.stage for t in packet.camera_timings] == ["backbone_camera"] * len(cams)
    assert packet.timing.stage == "backbone" and packet.timing.end_ns == max(t.end_ns for t in packet.camera_timings)


def test_camera_features_must_match_the_sets_cameras():
    fs = make_frame_set(0)
    stage = BackboneStage(CountingModel())
    cams = encode_as_they_arrive(stage, fs.cameras)
    with pytest.raises(ValueError, match="do not match"):
        packet_from_cameras(cams[1:], fs.channels)
    with pytest.raises(ValueError, match="do not match"):
        packet_from_cameras(cams[::-1], fs.channels)
