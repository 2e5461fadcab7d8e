"""Admission control of a live stream's camera cycles, inside the ingest actor (ingest.py): which cycles
enter the pipeline, which wait for a slot and which are dropped, decided at a cycle's first camera, and
the per-camera backbone calls of the admitted ones (pipeline.live_encode: camera)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import ray

from runtime.handoff import INGEST_END, NO_IMAGE, Staged, drop_for
from schema.messages import CAMERA_CHANNELS, StageTiming


def _encodable(frame: Any) -> bool:
    """Worth starting the backbone on (the set's full check comes at emission, check_frame_set)."""
    img, k = frame.image, np.asarray(frame.intrinsic)
    return (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            and min(img.shape[:2]) >= 8 and k.shape == (3, 3) and bool(np.all(np.isfinite(k)))
            and frame.sensor_to_ego.is_finite())


@dataclass(eq=False)
class _Cycle:
    """One camera cycle as admission sees it, from its first camera on (before the synchroniser's set)."""

    anchor_us: float  # cycle time of its first camera (timestamp minus the channel's firing offset)
    state: str  # 'admitted' (its cameras go to the backbone), 'waiting' (held un-encoded), 'dropped'
    reason: str = ""  # dropped: the drop record's reason and detail
    detail: str = ""
    members: set = field(default_factory=set)  # id() of its frames seen so far
    frames: list = field(default_factory=list)  # waiting: its frames held, not encoded
    fs: Any = None  # the synchronised set, once emitted
    emit_ns: int = 0
    released: bool = False  # admitted: its tick ended (the slot is free again)
    held_by_restart: str = ""  # admitted: an actor was seen restarting while it was in the pipeline (why)


class LiveAdmission:
    """Admission and per-camera encoding of a live source's cameras (ingest actor, live_encode camera).

    Admission: a cycle is decided when its FIRST camera arrives, so a set that will be dropped costs
    no backbone work. It is admitted while fewer than `cap` (pipeline.max_in_flight) admitted sets
    have not ended (ended = the driver reported its result or drop, `finished`); otherwise it waits,
    its cameras held un-encoded, and at most `queue` (pipeline.live_queue) cycles wait: a newer one
    drops the oldest waiting cycle ('overload'). When a slot frees the oldest waiting cycle is
    admitted (its held cameras go to the backbone). An admitted set is never dropped for capacity.
    While the driver reports an actor restarting (`block`), new and waiting cycles are dropped with
    that reason ('actor_restart'); so is a waiting cycle dropped while the slots are held by sets that
    were in the pipeline when an actor restarted (their failed ticks not yet reported ended). Every set
    the synchroniser emits ends as one `Staged` or one DropRecord put on `out`.

    Encoding of admitted cameras: a camera goes when the backbone is idle; otherwise it waits and
    goes together with the cameras that arrived meanwhile (one call, one ObjectRef per camera) when
    a later camera finds the backbone idle or, at the latest, when its set is complete. With the rig's
    `firing_order` known, the early cameras also go in pairs (a camera waits for the next one, ~8 ms
    later on a nuScenes rig), while the last two of the order go alone at once: the last camera's
    features, the ones the BEV step waits for, never share a call. One-image batches cost ~1.4x per
    camera on CPU (PyTorch's small-batch conv paths), so pairs and batching under load keep the cost
    near the set-at-once cost."""

    HORIZON_US = 2_000_000  # cycles this far behind the newest camera are forgotten

    def __init__(self, backbone: Any, out: Any = None, cap: int = 2, queue: int = 1,
                 firing_order: tuple[str, ...] | None = None, offsets_us: dict | None = None,
                 tolerance_us: int = 20_000, bev: Any = None) -> None:
        self.backbone = backbone
        self.out = out  # .put(Staged | DropRecord)
        self.cap, self.queue = max(int(cap), 1), max(int(queue), 0)
        self.alone = frozenset(firing_order[-2:]) if firing_order and len(firing_order) > 2 else None
        self.offsets_us = dict(offsets_us or {})
        self.tolerance_us = tolerance_us
        self.lock = threading.RLock()  # arrivals (ingest thread) vs `finished`/`block` (actor method threads)
        self.held: dict[int, Any] = {}  # id(frame) -> frame: admitted, not sent yet (arrival order)
        self.sent: dict[int, tuple[Any, Any]] = {}  # id(frame) -> (frame, ObjectRef of its CameraFeatures)
        self.calls: list = []  # one ObjectRef per unfinished call (all returns of a call finish together)
        self.cycles: list[_Cycle] = []  # recent cycles, oldest first
        self.of_frame: dict[int, tuple[Any, _Cycle]] = {}  # id(frame) -> (frame, its cycle)
        self.by_frame_id: dict[int, _Cycle] = {}  # emitted admitted sets whose tick has not ended
        self.blocked: tuple[str, str] | None = None
        self.block_seq = 0  # the driver's numbering of its block reports: an older one arriving late is ignored
        self.watch = {"backbone": backbone, **({"bev": bev} if bev is not None else {})}
        self._restart_checked: tuple[float, str | None] = (-1.0, None)
        self.ending = False
        self.ended = False
        self.counts = {"admitted": 0, "waited": 0, "dropped": 0}

    # -- encoding -----------------------------------------------------------------------------
    def unfinished(self) -> int:
        """Backbone calls sent and not finished yet (a finished one may have failed: its set says so)."""
        if self.calls:
            ready, _ = ray.wait(self.calls, num_returns=len(self.calls), timeout=0, fetch_local=False)
            done = set(ready)
            self.calls = [r for r in self.calls if r not in done]
        return len(self.calls)

    def restarting(self) -> str | None:
        """The pipeline actor Ray is restarting, if any (asked of Ray's control store, at most every
        50 ms): the slots are then held by a dead actor's sets, not by a shortage of capacity. The
        driver learns of a death only when a tick fails, which for a queued call is ~1 s later."""
        now = time.monotonic()
        if now - self._restart_checked[0] > 0.05:
            down = None
            for name, actor in self.watch.items():
                try:
                    state = ray._private.state.state.actor_table(actor._actor_id.hex()).get("State")
                except Exception:  # noqa: BLE001 - private API unavailable: assume alive
                    state = None
                if state in ("RESTARTING", "DEAD"):
                    down = f"the {name} actor is restarting"
                    break
            self._restart_checked = (now, down)
        return self._restart_checked[1]

    def _send(self, frames: list) -> None:
        refs = self.backbone.encode_cameras.options(num_returns=len(frames)).remote(
            [f.image for f in frames], tuple(f.channel for f in frames),
            np.stack([np.asarray(f.intrinsic, np.float64) for f in frames]),
            np.stack([f.sensor_to_ego.matrix for f in frames]))
        refs = [refs] if len(frames) == 1 else list(refs)
        for f, r in zip(frames, refs):
            self.held.pop(id(f), None)
            self.sent[id(f)] = (f, r)  # the frame is kept so its id is not reused
        self.calls.append(refs[0])

    def _hold(self, frame: Any) -> None:
        """An admitted camera: send it, with any held ones, if the backbone is idle."""
        if frame.channel in CAMERA_CHANNELS and _encodable(frame):
            self.held[id(frame)] = frame
            ready = self.alone is None or frame.channel in self.alone or len(self.held) >= 2
            if ready and self.unfinished() == 0:
                self._send(list(self.held.values()))

    # -- admission ----------------------------------------------------------------------------
    def _active(self) -> int:
        return sum(1 for c in self.cycles if c.state == "admitted" and not c.released)

    def _waiting(self) -> list[_Cycle]:
        return [c for c in self.cycles if c.state == "waiting"]

    def _cycle_for(self, frame: Any) -> _Cycle:
        ct = frame.timestamp_us - self.offsets_us.get(frame.channel, 0)
        for c in reversed(self.cycles):
            if abs(c.anchor_us - ct) <= self.tolerance_us:
                return c
        return self._new_cycle(float(ct))

    def _new_cycle(self, anchor_us: float) -> _Cycle:
        """A cycle seen for the first time: dropped while the ingest is blocked, admitted while a slot is
        free, else it waits (the oldest waiting one is dropped beyond live_queue)."""
        c = _Cycle(anchor_us, "waiting")
        self.cycles.append(c)
        if self.blocked is not None:
            self._drop(c, *self.blocked)
        elif self._active() < self.cap:
            self._admit(c)
        else:
            self.counts["waited"] += 1
            self._trim_waiting()
        return c

    def _restart_holding_slots(self) -> str | None:
        """Why the slots are full, if a restart is the cause: an actor Ray is restarting now, or one that was
        restarting while admitted sets were in the pipeline. Their ticks fail, but until the driver reports
        them ended they hold their slots, also after Ray has the actor back."""
        down = self.restarting()
        active = [c for c in self.cycles if c.state == "admitted" and not c.released]
        if down is not None:
            for c in active:
                c.held_by_restart = c.held_by_restart or down
            return down
        return next((c.held_by_restart for c in active if c.held_by_restart), None)

    def _trim_waiting(self) -> None:
        waiting = self._waiting()
        while len(waiting) > self.queue:
            down = self._restart_holding_slots()
            if down is not None:
                self._drop(waiting.pop(0), "actor_restart", down)
            else:
                self._drop(waiting.pop(0), "overload",
                           f"{self.cap} frame sets in the pipeline and a newer one waiting (dropped before encoding)")

    def _drop(self, c: _Cycle, reason: str, detail: str) -> None:
        c.state, c.reason, c.detail = "dropped", reason, detail
        c.frames.clear()
        self.counts["dropped"] += 1
        if c.fs is not None:
            self._put_drop(c)

    def _admit(self, c: _Cycle) -> None:
        c.state = "admitted"
        self.counts["admitted"] += 1
        frames, c.frames = c.frames, []
        for f in frames:
            self._hold(f)
        if c.fs is not None:  # its set was complete while it waited
            self._put_staged(c)

    def _release(self, c: _Cycle) -> None:
        if c.state == "admitted" and not c.released:
            c.released = True
            self._promote()

    def _promote(self) -> None:
        while self.blocked is None and self._active() < self.cap:
            waiting = self._waiting()
            if not waiting:
                break
            self._admit(waiting[0])
        self._maybe_end()

    def _put_staged(self, c: _Cycle) -> None:
        fs = c.fs
        unsent = [f for f in fs.cameras if id(f) not in self.sent]
        for f in unsent:
            self.held.pop(id(f), None)
        if unsent:
            self._send(unsent)
        refs = tuple(self.sent.pop(id(f))[1] for f in fs.cameras)
        light = replace(fs, cameras=tuple(replace(f, image=NO_IMAGE) for f in fs.cameras))
        self.by_frame_id[fs.frame_id] = c
        self.out.put(Staged(light.with_timing(StageTiming("ingest", c.emit_ns, time.time_ns())), camera_refs=refs))

    def _put_drop(self, c: _Cycle) -> None:
        fs = c.fs.with_timing(StageTiming("ingest", c.emit_ns, time.time_ns()))
        self.out.put(drop_for(fs, c.reason, c.detail))

    def _forget_frames(self, cameras: tuple) -> None:
        for f in cameras:
            self.held.pop(id(f), None)
            self.sent.pop(id(f), None)
            self.of_frame.pop(id(f), None)

    def _gc(self, newest_us: float) -> None:
        horizon = newest_us - self.HORIZON_US
        keep = []
        for c in self.cycles:
            if c.anchor_us >= horizon or (c.fs is not None and (c.state == "waiting" or
                                                                  (c.state == "admitted" and not c.released))):
                keep.append(c)  # recent, or a set still waiting for a slot or holding one
            elif c.fs is None and c.state == "admitted":
                c.released = True  # its cameras never became a set (all late or rejected)
        self.cycles = keep
        for table in (self.held, self.sent, self.of_frame):
            for key in [k for k, v in table.items() if (v[0] if isinstance(v, tuple) else v).timestamp_us < horizon]:
                del table[key]

    # -- the ingest thread ----------------------------------------------------------------------
    def arrived(self, frame: Any) -> None:
        """A camera just arrived (before the synchroniser sees it): its cycle's admission decides."""
        with self.lock:
            c = self._cycle_for(frame)
            if c.fs is not None:  # its set already went (degraded): the synchroniser reports it late
                return
            c.members.add(id(frame))
            self.of_frame[id(frame)] = (frame, c)
            if c.state == "admitted":
                self._hold(frame)
            elif c.state == "waiting":
                c.frames.append(frame)
            self._gc(frame.timestamp_us - self.offsets_us.get(frame.channel, 0))
            self._promote()  # a cycle that ended by garbage collection frees its slot

    def discard(self, frame: Any) -> None:
        """A late or rejected frame: its features will not be used."""
        with self.lock:
            entry = self.of_frame.pop(id(frame), None)
            if entry is not None:
                c = entry[1]
                c.members.discard(id(frame))
                c.frames = [f for f in c.frames if f is not frame]
            self.held.pop(id(frame), None)
            self.sent.pop(id(frame), None)

    def _set_cycle(self, fs: Any) -> _Cycle:
        """The admission cycle of an emitted set: the one most of its cameras joined (cycles the
        synchroniser merged into it are retired)."""
        found: dict[int, _Cycle] = {}
        votes: dict[int, int] = {}
        for f in fs.cameras:
            entry = self.of_frame.get(id(f))
            if entry is not None:
                found[id(entry[1])] = entry[1]
                votes[id(entry[1])] = votes.get(id(entry[1]), 0) + 1
        if not found:  # no camera was seen arriving (not expected): decide now
            return self._new_cycle(float(fs.timestamp_us))
        c = found[max(votes, key=votes.get)]
        ids = {id(f) for f in fs.cameras}
        for other in found.values():
            if other is not c:
                other.members -= ids
                other.frames = [f for f in other.frames if id(f) not in ids]
                if not other.members and other.fs is None:
                    self.cycles.remove(other)
                    self._release(other)
        if c.state == "waiting":  # keep the set's own cameras held with it
            known = {id(f) for f in c.frames}
            c.frames += [f for f in fs.cameras if id(f) not in known]
        return c

    def emit(self, fs: Any, start_ns: int) -> None:
        """A checked set from the synchroniser: out goes its Staged (admitted), its drop record
        (dropped), or nothing yet (waiting: it goes when admitted or dropped)."""
        with self.lock:
            c = self._set_cycle(fs)
            c.fs, c.emit_ns = fs, start_ns
            if c.state == "admitted":
                self._put_staged(c)
            elif c.state == "dropped":
                self._forget_frames(fs.cameras)
                self._put_drop(c)

    def refused(self, fs: Any) -> None:
        """An emitted set that failed its input check (dropped by the ingest actor): frees its slot."""
        with self.lock:
            c = self._set_cycle(fs)
            c.fs = fs
            self._forget_frames(fs.cameras)
            if c.state == "waiting":
                c.state, c.frames = "dropped", []
            self._release(c)

    def end(self) -> None:
        """The source ended (every set emitted): the end marker goes once no set waits for a slot."""
        with self.lock:
            self.ending = True
            for c in self._waiting():
                if c.fs is None:  # frames that never became a set
                    self.cycles.remove(c)
            self._maybe_end()

    def _maybe_end(self) -> None:
        if self.ending and not self.ended and not self._waiting():
            self.ended = True
            self.out.put(INGEST_END)

    # -- the driver's reports -----------------------------------------------------------------
    def finished(self, frame_id: int) -> None:
        """The tick of an admitted set ended (result or drop): its slot is free."""
        with self.lock:
            c = self.by_frame_id.pop(frame_id, None)
            if c is not None:
                self._release(c)

    def block(self, reason: str | None, detail: str = "", seq: int | None = None) -> None:
        """Drop new and waiting cycles with `reason` (an actor is restarting) until called with None. `seq`
        numbers the driver's reports: the ingest actor runs its calls in threads, so a report can arrive
        after a later one (a 'restarting' after its 'back'), and is then ignored."""
        with self.lock:
            if seq is not None:
                if seq <= self.block_seq:
                    return
                self.block_seq = seq
            self.blocked = None if reason is None else (reason, detail)
            if reason is not None:
                for c in self._waiting():
                    self._drop(c, reason, detail)
            self._promote()
