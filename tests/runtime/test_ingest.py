"""Ingest of a live source: its raw camera frames go through the synchroniser configured in
runtime.yaml (the source's own period and firing offsets), missing cameras give degraded sets."""
from __future__ import annotations

from dataclasses import replace

from runtime.config import SyncConfig
from schema.messages import CAMERA_CHANNELS
from runtime.feeders import source_frame_sets
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


def _drain(q):
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def test_camera_encoder_admits_at_the_first_camera_and_never_encodes_a_dropped_set(ray_session):
    """Admission at a cycle's first camera: with one slot (cap 1, queue 1), cycle 1 waits un-encoded,
    cycle 2's first camera drops it ('overload', oldest waiting first) and waits in its place; when
    tick 0 ends, cycle 2 is admitted. The backbone encodes the cameras of sets 0 and 2 only."""
    import functools
    import queue

    import ray

    from runtime.actors import BackboneActor, StateStore
    from runtime.admission import LiveAdmission
    from runtime.handoff import INGEST_END
    from runtime.handoff import Staged
    from schema.results import DropRecord
    from tests.runtime.fakes import CountingModel

    store = ray.remote(StateStore).options(num_cpus=0).remote()
    backbone = ray.remote(BackboneActor).options(num_cpus=0).remote(functools.partial(CountingModel), 1, 1, store)
    try:
        out = queue.Queue()
        enc = LiveAdmission(backbone, out, cap=1, queue=1)
        fs0, fs1, fs2 = (make_frame_set(i) for i in range(3))
        for c in fs0.cameras:
            enc.arrived(c)
        enc.emit(fs0, 0)
        (staged0,) = _drain(out)
        assert isinstance(staged0, Staged) and len(staged0.camera_refs) == 6
        assert staged0.fs.cameras[0].image.size == 0  # no pixels travel with the set
        enc.arrived(replace(fs0.cameras[0]))  # a camera of a set already emitted: late, not encoded
        for c in fs1.cameras:  # no slot: cycle 1 waits, nothing encoded
            enc.arrived(c)
        enc.emit(fs1, 0)
        assert _drain(out) == [] and not enc.held
        enc.arrived(fs2.cameras[0])  # a newer cycle: the oldest waiting one (1) is dropped
        (drop1,) = _drain(out)
        assert isinstance(drop1, DropRecord) and drop1.frame_id == 1 and drop1.reason == "overload"
        for c in fs2.cameras[1:]:
            enc.arrived(c)
        enc.emit(fs2, 0)
        enc.end()
        assert _drain(out) == []  # set 2 waits for a slot, and the end marker after it
        enc.finished(0)
        staged2, end = _drain(out)
        assert isinstance(staged2, Staged) and staged2.frame_id == 2 and end == INGEST_END
        cams = ray.get(list(staged0.camera_refs) + list(staged2.camera_refs))
        assert [c.channel for c in cams] == list(fs0.channels) + list(fs2.channels)
        assert ray.get(backbone.cameras_encoded.remote()) == 12  # set 1's six cameras never went
        assert enc.counts == {"admitted": 2, "waited": 2, "dropped": 1}
    finally:
        ray.kill(backbone)
        ray.kill(store)


def test_camera_encoder_blocked_drops_as_actor_restart(ray_session):
    """While the driver reports an actor restarting, waiting and new cycles are dropped with that
    reason (not 'overload'), unencoded; once unblocked, cycles are admitted again."""
    import functools
    import queue

    import ray

    from runtime.actors import BackboneActor, StateStore
    from runtime.admission import LiveAdmission
    from runtime.handoff import Staged
    from tests.runtime.fakes import CountingModel

    store = ray.remote(StateStore).options(num_cpus=0).remote()
    backbone = ray.remote(BackboneActor).options(num_cpus=0).remote(functools.partial(CountingModel), 1, 1, store)
    try:
        out = queue.Queue()
        enc = LiveAdmission(backbone, out, cap=1, queue=1)
        sets = [make_frame_set(i) for i in range(4)]
        for fs in sets[:2]:  # 0 admitted, 1 waiting
            for c in fs.cameras:
                enc.arrived(c)
            enc.emit(fs, 0)
        enc.block("actor_restart", "a pipeline actor is restarting")
        for c in sets[2].cameras:
            enc.arrived(c)
        enc.emit(sets[2], 0)
        enc.finished(0)  # no admission while blocked
        enc.block(None)
        for c in sets[3].cameras:
            enc.arrived(c)
        enc.emit(sets[3], 0)
        records = _drain(out)
        assert [(r.frame_id, getattr(r, "reason", "staged")) for r in records] == [
            (0, "staged"), (1, "actor_restart"), (2, "actor_restart"), (3, "staged")]
        assert all(len(r.camera_refs) == 6 for r in records if isinstance(r, Staged))
        ray.get([r.camera_refs[-1] for r in records if isinstance(r, Staged)])
        assert ray.get(backbone.cameras_encoded.remote()) == 12
    finally:
        ray.kill(backbone)
        ray.kill(store)


def test_camera_encoder_names_slots_still_held_by_a_restarted_actors_sets(ray_session):
    """Sets that were in the pipeline while an actor restarted hold their slots until the driver reports their
    (failed) ticks ended, also after Ray has the actor back: a cycle dropped for want of a slot meanwhile is
    an 'actor_restart' drop. Once they ended, a full pipeline is 'overload' again."""
    import functools
    import queue

    import ray

    from runtime.actors import BackboneActor, StateStore
    from runtime.admission import LiveAdmission
    from tests.runtime.fakes import CountingModel

    store = ray.remote(StateStore).options(num_cpus=0).remote()
    backbone = ray.remote(BackboneActor).options(num_cpus=0).remote(functools.partial(CountingModel), 1, 1, store)
    try:
        out = queue.Queue()
        enc = LiveAdmission(backbone, out, cap=1, queue=1)
        down = ["the bev actor is restarting"]
        enc.restarting = lambda: down[0]  # what Ray's actor table would say

        def arrive(fs):
            for c in fs.cameras:
                enc.arrived(c)
            enc.emit(fs, 0)

        sets = [make_frame_set(i) for i in range(6)]
        arrive(sets[0])  # admitted: in the pipeline when the actor dies
        arrive(sets[1])  # waits
        arrive(sets[2])  # 1 dropped: the actor is restarting
        down[0] = None  # Ray has it back; set 0's failed tick is not reported yet
        arrive(sets[3])  # 2 dropped: its slot is still held by set 0
        enc.finished(0)  # 3 admitted
        arrive(sets[4])  # waits
        arrive(sets[5])  # 4 dropped: set 3 holds the slot, no restart involved
        records = [(r.frame_id, getattr(r, "reason", "staged")) for r in _drain(out)]
        assert records == [(0, "staged"), (1, "actor_restart"), (2, "actor_restart"), (3, "staged"), (4, "overload")]
    finally:
        ray.kill(backbone)
        ray.kill(store)


def test_camera_encoder_ignores_a_block_report_overtaken_by_a_later_one(ray_session):
    """The driver numbers its reports; the threaded ingest actor may run them out of order. A 'restarting'
    that arrives after its 'back' must not block the stream for good, and the latest report wins."""
    import queue

    import ray

    from runtime.actors import StateStore
    from runtime.admission import LiveAdmission

    store = ray.remote(StateStore).options(num_cpus=0).remote()
    try:
        enc = LiveAdmission(store, queue.Queue(), cap=1, queue=1)  # no camera goes out: any actor serves
        enc.block(None, seq=2)  # 'back' arrives first
        enc.block("actor_restart", "a pipeline actor is restarting", seq=1)  # its 'restarting', late
        assert enc.blocked is None
        enc.block("actor_restart", "again", seq=3)
        enc.block(None, seq=2)  # a stale 'back'
        assert enc.blocked == ("actor_restart", "again")
        enc.block(None)  # unnumbered (a caller that does not order its reports) applies at once
        assert enc.blocked is None
    finally:
        ray.kill(store)


def test_camera_encoder_batches_while_the_backbone_is_busy(ray_session):
    import functools
    import queue

    import ray

    from runtime.actors import BackboneActor, StateStore
    from runtime.admission import LiveAdmission
    from tests.runtime.fakes import CountingModel

    store = ray.remote(StateStore).options(num_cpus=0).remote()
    backbone = ray.remote(BackboneActor).options(num_cpus=0).remote(
        functools.partial(CountingModel, encode_sleep_s=0.3), 1, 1, store)
    try:
        out = queue.Queue()
        enc = LiveAdmission(backbone, out, cap=2)
        fs0 = make_frame_set(0)
        for c in fs0.cameras:  # the first finds the backbone idle and goes alone; the others wait
            enc.arrived(c)
        assert len(enc.held) == 5 and enc.unfinished() == 1
        enc.emit(fs0, 0)  # the set is complete: the waiting five go as one call
        refs0 = out.get_nowait().camera_refs
        assert len(refs0) == 6 and not enc.held and enc.unfinished() == 2
        cams = ray.get(list(refs0))
        assert [c.channel for c in cams] == list(fs0.channels)
        assert cams[0].timing != cams[1].timing and len({c.timing for c in cams[1:]}) == 1
    finally:
        ray.kill(backbone)
        ray.kill(store)


def test_camera_encoder_pairs_early_cameras_and_sends_the_last_two_alone(ray_session):
    import functools
    import queue

    import ray

    from runtime.actors import BackboneActor, StateStore
    from runtime.admission import LiveAdmission
    from schema.messages import CAMERA_CHANNELS
    from tests.runtime.fakes import CountingModel

    store = ray.remote(StateStore).options(num_cpus=0).remote()
    backbone = ray.remote(BackboneActor).options(num_cpus=0).remote(functools.partial(CountingModel), 1, 1, store)
    try:
        out = queue.Queue()
        enc = LiveAdmission(backbone, out, firing_order=CAMERA_CHANNELS)
        fs = make_frame_set(0)
        for c in fs.cameras:  # the backbone is idle at every arrival
            enc.arrived(c)
            while enc.unfinished():
                ray.wait(list(enc.calls), num_returns=len(enc.calls))
        enc.emit(fs, 0)
        cams = ray.get(list(out.get_nowait().camera_refs))
        calls = {}
        for c in cams:
            calls.setdefault(c.timing, []).append(c.channel)
        assert sorted(calls.values()) == sorted([["CAM_FRONT", "CAM_FRONT_RIGHT"], ["CAM_BACK_RIGHT", "CAM_BACK"],
                                                 ["CAM_BACK_LEFT"], ["CAM_FRONT_LEFT"]])
    finally:
        ray.kill(backbone)
        ray.kill(store)
