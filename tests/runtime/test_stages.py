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


def _bev_ticks(stage, sets):
    """(vx of the tick's car, tracks after it, the car's track ids) per frame set, through BevStage."""
    from runtime.stages import FeaturePacket, StageTiming

    out = []
    for fs in sets:
        meta = TickMeta.from_frame_set(fs)
        packet = FeaturePacket(np.zeros((1, 6, 3, 1, 1), np.float32), np.zeros((1, 6, 3, 3), np.float32),
                               np.tile(np.eye(4, dtype=np.float32), (1, 6, 1, 1)), np.ones((1, 6), bool),
                               np.zeros((6, 2, 2), np.uint8), StageTiming("backbone", 0, 1))
        r = stage.run(packet, meta)
        assert r.detections_global.track_ids.tolist() == r.detections_ego.track_ids.tolist()
        out.append((float(r.detections_ego.boxes[0, 7]), len(stage.tracker), r.detections_ego.track_ids.tolist()))
    return out


def test_bev_stage_tracks_within_a_scene_and_keeps_tracks_in_a_checkpoint():
    from runtime.stages import BevStage
    from tests.runtime.fakes import TrackingCountingModel

    sets = [make_frame_set(i, new_scene=(i in (0, 5))) for i in range(8)]
    ticks = _bev_ticks(BevStage(TrackingCountingModel()), sets)
    assert ticks[0][0] == ticks[5][0] == 1.0  # a scene's first tick: the head's velocity
    for run in (ticks[:5], ticks[5:]):  # then the track's, rising toward the car's 24 m/s in the world
        vx = [v for v, _, _ in run]
        assert all(a < b for a, b in zip(vx, vx[1:])) and vx[-1] > 1.1
    assert all(n == 1 and ids == [0] for _, n, ids in ticks)  # one track throughout, numbered afresh per scene

    a = BevStage(TrackingCountingModel())
    _bev_ticks(a, sets[:4])
    b = BevStage(TrackingCountingModel())
    b.restore(a.checkpoint())
    fresh = BevStage(TrackingCountingModel())
    assert _bev_ticks(a, sets[4:5]) == _bev_ticks(b, sets[4:5]) != _bev_ticks(fresh, sets[4:5])


def test_bev_stage_hands_each_track_filter_to_the_wrapper_and_keeps_the_last_outputs():
    """wrap_track_filter sees every tick's filter with its meta and its result is what decode uses; last_outputs
    is the step's output of the last tick."""
    from runtime.stages import BevStage
    from tests.runtime.fakes import TrackingCountingModel

    seen = []

    class Doubling:
        """A filter around the tracker's own that reports twice the ids it gives."""

        def __init__(self, inner, meta):
            self.inner = inner
            seen.append((meta.frame_id, meta.new_scene))

        def __call__(self, *args):
            return self.inner(*args)

        @property
        def track_ids(self):
            return None if self.inner.track_ids is None else self.inner.track_ids * 2 + 10

    sets = [make_frame_set(i, new_scene=(i in (0, 2))) for i in range(3)]
    plain, wrapped = BevStage(TrackingCountingModel()), BevStage(TrackingCountingModel(), wrap_track_filter=Doubling)
    assert wrapped.last_outputs is None
    ids = [i for _, _, i in _bev_ticks(plain, sets)]
    assert [i for _, _, i in _bev_ticks(wrapped, sets)] == [[2 * t + 10 for t in tick] for tick in ids]
    assert seen == [(0, True), (1, False), (2, True)]
    assert wrapped.last_outputs is not None
