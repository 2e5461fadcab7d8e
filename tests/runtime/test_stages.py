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


def _encoded_set(corrupt=()):
    """A synthetic set whose cameras carry JPEGs left encoded (as a replay with replay_decode: backbone hands
    them on), and the same set with those JPEGs decoded; `corrupt` channels get cut-short data."""
    import io
    from dataclasses import replace

    from PIL import Image

    from replay.jpeg import decode_encoded, encoded_jpeg
    from schema.messages import EncodedImage

    fs = make_frame_set(0, size=(48, 80))
    enc, dec = [], []
    for cam in fs.cameras:
        buf = io.BytesIO()
        Image.fromarray(cam.image).save(buf, format="JPEG", quality=95)
        image, _ = encoded_jpeg(buf.getvalue())
        if cam.channel in corrupt:
            image = EncodedImage(image.data[: len(image.data) // 3], image.shape, image.scale)
        enc.append(replace(cam, image=image))
        dec.append(replace(cam, image=decode_encoded(image) if cam.channel not in corrupt else None))
    return replace(fs, cameras=tuple(enc)), replace(fs, cameras=tuple(c for c in dec if c.image is not None),
                                                      missing=tuple(corrupt))


@pytest.mark.parametrize("threads", [1, 3])
def test_backbone_decodes_encoded_images_as_the_driver_would(threads):
    """Decoding in the backbone stage (one thread or a pool) gives the packet and tick of the same set decoded
    before; a 'decode' timing is recorded."""
    from runtime.stages import BevStage

    enc, dec = _encoded_set()
    stage = BackboneStage(CountingModel(), decode_threads=threads)
    a = stage.run([c.image for c in enc.cameras], TickMeta.from_frame_set(enc))
    b = stage.run([c.image for c in dec.cameras], TickMeta.from_frame_set(dec))
    np.testing.assert_array_equal(a.feats, b.feats)
    np.testing.assert_array_equal(a.seg, b.seg)
    assert a.lost == () and a.decode_timing is not None and b.decode_timing is None
    tick = BevStage(CountingModel()).run(a, TickMeta.from_frame_set(enc))
    assert "decode" in [t.stage for t in tick.timings] and tick.missing == ()


def test_a_camera_that_does_not_decode_becomes_missing():
    """A corrupt JPEG found in the backbone stage drops that camera from the tick (missing, no seg), as a source
    that decodes it itself would; every camera corrupt is a ValueError (a 'bad_input' drop record)."""
    from runtime.stages import BevStage

    enc, dec = _encoded_set(corrupt=("CAM_BACK",))
    packet = BackboneStage(CountingModel()).run([c.image for c in enc.cameras], TickMeta.from_frame_set(enc))
    assert packet.lost == ("CAM_BACK",)
    ref = BackboneStage(CountingModel()).run([c.image for c in dec.cameras], TickMeta.from_frame_set(dec))
    np.testing.assert_array_equal(packet.feats, ref.feats)
    np.testing.assert_array_equal(packet.camera_mask, ref.camera_mask)
    tick = BevStage(CountingModel()).run(packet, TickMeta.from_frame_set(enc))
    assert tick.missing == ("CAM_BACK",) and "CAM_BACK" not in tick.seg_channels and len(tick.seg) == 5

    all_bad, _ = _encoded_set(corrupt=tuple(c.channel for c in enc.cameras))
    with pytest.raises(ValueError, match="no camera image"):
        BackboneStage(CountingModel()).run([c.image for c in all_bad.cameras], TickMeta.from_frame_set(all_bad))
