"""Ingest of a live source: its raw camera frames go through the synchroniser configured in
runtime.yaml (the source's own period and firing offsets), missing cameras give degraded sets."""
from __future__ import annotations

from dataclasses import replace

from runtime.config import SyncConfig
from runtime.messages import CAMERA_CHANNELS
from runtime.pipeline import source_frame_sets
from tests.runtime.fakes import LiveCameraSource, make_frame_set


class _LiveFrames:
    is_live = True
    period_us = 83_333
    channel_offsets_us = {c: 5_000 * i for i, c in enumerate(CAMERA_CHANNELS)}

    def __init__(self, n: int, drop: dict[int, str]):
        self.n, self.drop = n, drop

    def camera_frames(self):
        for i in range(self.n):
            fs = make_frame_set(i)
            for c in fs.cameras:
                if self.drop.get(i) == c.channel:
                    continue
                yield replace(c, timestamp_us=c.timestamp_us + self.channel_offsets_us[c.channel])

    def frame_sets(self):  # pragma: no cover - the runtime must use camera_frames + its own sync
        raise AssertionError("a live source's raw frames are synchronised by the runtime")


def test_live_frames_are_synchronised_with_the_configured_tolerance():
    late = [0]
    sets = list(source_frame_sets(_LiveFrames(5, {2: "CAM_BACK"}), SyncConfig(tolerance_ms=20, max_wait_ms=40), late))
    assert len(sets) == 5
    assert [s.degraded for s in sets] == [False, False, True, False, False]
    assert sets[2].missing == ("CAM_BACK",) and len(sets[2].cameras) == 5
    assert sets[0].new_scene and not any(s.new_scene for s in sets[1:])
    assert [s.frame_id for s in sets] == sorted(s.frame_id for s in sets) and late == [0]


def test_a_set_missing_its_last_camera_goes_out_on_the_wall_clock_not_with_the_next_frame():
    """The bus goes quiet for 0.4 s after a cycle whose last camera was lost: the degraded set must
    not wait for the next frame (it leaves max_wait after the lost camera's exposure)."""
    src = LiveCameraSource(3, drop={0: ("CAM_BACK_LEFT",)}, pause_after={0: 0.4})
    seen, discarded, started_at_emit = [], [], []
    sets = []
    for fs in source_frame_sets(src, SyncConfig(tolerance_ms=20, max_wait_ms=12), [0],
                                on_frame=seen.append, on_discard=discarded.append):
        sets.append(fs)
        started_at_emit.append(list(src.started_cycles))
    assert [s.frame_id for s in sets] == [0, 1, 2]
    assert sets[0].missing == ("CAM_BACK_LEFT",) and not sets[1].degraded and not sets[2].degraded
    assert started_at_emit[0] == [0], "the degraded set waited for the next cycle's frames"
    assert len(seen) == 17 and discarded == []  # every delivered frame seen once, none late


def test_camera_encoder_batches_while_the_backbone_is_busy_and_sheds_when_behind(ray_session):
    import functools

    import ray

    from runtime.actors import BackboneActor, CameraEncoder, StateStore
    from tests.runtime.fakes import CountingModel

    store = ray.remote(StateStore).options(num_cpus=0).remote()
    backbone = ray.remote(BackboneActor).options(num_cpus=0).remote(
        functools.partial(CountingModel, encode_sleep_s=0.3), 1, 1, store)
    try:
        enc = CameraEncoder(backbone, max_calls=2)
        fs0, fs1 = make_frame_set(0), make_frame_set(1)
        for c in fs0.cameras:  # the first finds the backbone idle and goes alone; the others wait
            enc.arrived(c)
        assert len(enc.held) == 5 and enc.unfinished() == 1
        refs0 = enc.refs_for(fs0.cameras)  # the set is complete: the waiting five go as one call
        assert len(refs0) == 6 and not enc.held and enc.unfinished() == 2
        for c in fs1.cameras:
            enc.arrived(c)
        assert enc.refs_for(fs1.cameras) is None and enc.shed == 1  # would queue behind 2 calls: shed
        assert not enc.held and not enc.sent
        cams = ray.get(list(refs0))
        assert [c.channel for c in cams] == list(fs0.channels)
        assert cams[0].timing != cams[1].timing and len({c.timing for c in cams[1:]}) == 1
    finally:
        ray.kill(backbone)
        ray.kill(store)


def test_camera_encoder_pairs_early_cameras_and_sends_the_last_two_alone(ray_session):
    import functools

    import ray

    from runtime.actors import BackboneActor, CameraEncoder, StateStore
    from runtime.messages import CAMERA_CHANNELS
    from tests.runtime.fakes import CountingModel

    store = ray.remote(StateStore).options(num_cpus=0).remote()
    backbone = ray.remote(BackboneActor).options(num_cpus=0).remote(functools.partial(CountingModel), 1, 1, store)
    try:
        enc = CameraEncoder(backbone, firing_order=CAMERA_CHANNELS)
        fs = make_frame_set(0)
        for c in fs.cameras:  # the backbone is idle at every arrival
            enc.arrived(c)
            while enc.unfinished():
                ray.wait(list(enc.calls), num_returns=len(enc.calls))
        cams = ray.get(list(enc.refs_for(fs.cameras)))
        calls = {}
        for c in cams:
            calls.setdefault(c.timing, []).append(c.channel)
        assert sorted(calls.values()) == sorted([["CAM_FRONT", "CAM_FRONT_RIGHT"], ["CAM_BACK_RIGHT", "CAM_BACK"],
                                                 ["CAM_BACK_LEFT"], ["CAM_FRONT_LEFT"]])
    finally:
        ray.kill(backbone)
        ray.kill(store)
