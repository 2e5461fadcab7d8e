"""Tick scheduling: feed frame sets through the actors with a cap on ticks in flight, and account
for every frame set as exactly one TickResult or one DropRecord.

- Images are `ray.put` once per tick; the backbone's output goes to the BEV actor as an ObjectRef,
  the BEV result to the sink as an ObjectRef: the driver never fetches features, and never blocks
  in `ray.get` — it awaits the oldest tick or the next frame set, whichever comes first.
- Live via the ingest actor with `pipeline.live_encode: camera`: the backbone already ran per camera
  as each arrived; the driver submits only the BEV step, with the per-camera feature refs (Staged).
- Replay (not live): the source is read only when a slot is free, so a full pipeline blocks the
  source and nothing is lost. Live: frame sets arriving while the pipeline is full wait in a queue
  of `live_queue`; beyond that the oldest waiting one is dropped ('overload'). With per-camera
  encoding the ingest actor decides admission at a set's first camera (admission.LiveAdmission), so a
  set dropped for capacity is never encoded; the driver reports each ended tick back to it.
- Input checks happen before submission ('bad_input', 'late_camera'); a tick whose actor died
  becomes 'actor_restart' (Ray restarts the actor), and so does, live, every set arriving before the
  actor is back; an exception in a stage 'bad_input' (ValueError) or 'error'.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import ray
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError

from runtime.config import PipelineConfig
from runtime.feeders import END, ActorFeeder, SourceError, SourceFeeder
from runtime.handoff import Staged, drop_for
from schema.messages import FrameSet, StageTiming
from schema.results import DropRecord, TickResult
from runtime.stages import TickMeta
from runtime.validate import check_frame_set


@dataclass
class _InFlight:
    meta: TickMeta
    ref: Any  # ObjectRef of the TickResult
    fut: asyncio.Future
    first_stage: asyncio.Future  # done when the first stage this tick queues at is free: the backbone
    # (set at once), or the BEV actor (per-camera encoding, where the backbone started before submission)
    first_done_s: list = field(default_factory=list)  # [time.monotonic() when first_stage finished]

    def __post_init__(self) -> None:
        self.first_stage.add_done_callback(lambda _: self.first_done_s.append(time.monotonic()))



def classify_failure(exc: BaseException) -> tuple[str, str]:
    """A failed tick's exception -> (drop reason, detail)."""
    if isinstance(exc, RayActorError):
        return "actor_restart", f"actor died while running the tick: {type(exc).__name__}"
    cause = getattr(exc, "cause", None) if isinstance(exc, RayTaskError) else exc
    if isinstance(cause, RayActorError):
        return "actor_restart", f"actor died while running the tick: {type(cause).__name__}"
    if isinstance(cause, ValueError):
        return "bad_input", f"{type(cause).__name__}: {cause}"[:300]
    return "error", f"{type(cause or exc).__name__}: {cause or exc}"[:300]


class TickPipeline:
    """Schedules frame sets over a backbone actor and a BEV actor (and an optional sink actor)."""

    def __init__(self, backbone: Any, bev: Any, cfg: PipelineConfig, live: bool, sink: Any = None):
        self.backbone, self.bev, self.sink = backbone, bev, sink
        self.fused = backbone is bev  # one PerceptionActor runs both stages: a tick is one call (actors.py)
        self.cfg = cfg
        self.live = live
        self.submitted = 0
        self.last_seq: int | None = None  # the fused actor's last submission since start or a restart (its order)
        self.max_seen_in_flight = 0
        self.recovering = False  # an actor died: submit nothing until Ray has it back
        self.restart_wait_s = 0.0
        self.stage_s: dict[str, float] = {}  # running estimates of the backbone and BEV stage durations
        self.bev_end_s = 0.0  # monotonic time the BEV actor finished its last tick
        self.feeder: Any = None

    # Replay: a tick is released to the backbone just in time for its features to reach the BEV actor
    # when that frees, instead of as soon as the backbone frees (then, with a BEV slower than the
    # backbone, every tick would wait its turn inside the BEV actor: latency without throughput).
    JIT_MARGIN_S = 0.003  # released this much early: the hand-overs between the actors

    def _learn(self, result: TickResult) -> None:
        for t in result.timings:
            if t.stage == "bev":  # its end on the monotonic clock
                self.bev_end_s = time.monotonic() - (time.time_ns() - t.end_ns) / 1e9
            if t.stage in ("backbone", "bev"):
                old = self.stage_s.get(t.stage)
                x = (t.end_ns - t.start_ns) / 1e9
                self.stage_s[t.stage] = x if old is None else 0.8 * old + 0.2 * x

    def _release_at(self, inflight: "deque[_InFlight]") -> float | None:
        """Monotonic time at which the next replay tick may go to the backbone (None: now)."""
        if self.live or self.fused or not inflight or len(self.stage_s) < 2:
            return None  # (fused: the actor's BEV thread takes the ticks in order as its backbone thread ends them)
        free = self.bev_end_s  # when the BEV actor should be done with the ticks already past the backbone
        for job in inflight:
            if not job.first_done_s:
                return None  # the gate on a free backbone decides
            free = max(free, job.first_done_s[0]) + self.stage_s["bev"]
        return free - self.stage_s["backbone"] - self.JIT_MARGIN_S

    async def _await_actors(self, timeout_s: float = 300.0) -> None:
        """Wait until Ray has restarted the dead actor(s), so the ticks submitted next do not fail too."""
        start = time.monotonic()
        for actor in (self.backbone, self.bev):
            while True:
                try:
                    await asyncio.wrap_future(actor.node_id.remote().future())
                    break
                except ActorUnavailableError:  # restarting
                    pass
                except RayActorError as exc:
                    if time.monotonic() - start > timeout_s:
                        raise RuntimeError(f"a pipeline actor died and was not restarted within {timeout_s:.0f} s "
                                           f"(stages.*.max_restarts exhausted?): {exc}") from exc
                await asyncio.sleep(0.1)
        self.recovering = False
        self.last_seq = None  # the restarted actor has queued nothing yet
        self.restart_wait_s += time.monotonic() - start

    def _submit(self, item: FrameSet | Staged) -> _InFlight:
        start = time.time_ns()
        if isinstance(item, Staged) and item.camera_refs:
            # The backbone already runs (or ran) per camera: the BEV actor takes the features by
            # reference (Ray hands them over once all are ready). Its own end is the slot that frees.
            # The ingest actor admitted at most max_in_flight such sets, so it goes at once: queued in
            # order at the BEV actor, it starts the moment the previous tick ends (no driver round trip).
            meta = self._meta(item.fs, start)
            order = self._order() if self.fused else {}
            result_ref = self.bev.run_cameras.remote(meta, *item.camera_refs, **order)
            self.submitted += 1
            return self._queued(meta, result_ref)
        if isinstance(item, Staged):  # the ingest actor already put the images
            fs, images_ref = item.fs, item.images_ref
        else:
            fs = item
            images_ref = ray.put([c.image for c in fs.cameras])  # once; the backbone gets it by reference
        meta = self._meta(fs, start)
        if self.fused:  # one call: backbone and BEV in the actor's process; queued there in order (see above)
            result_ref = self.bev.tick.remote(images_ref, meta, **self._order())
            self.submitted += 1
            return self._queued(meta, result_ref)
        packet_ref, backbone_done = self.backbone.run.options(num_returns=2).remote(images_ref, meta)
        result_ref = self.bev.run.remote(packet_ref, meta)
        self.submitted += 1
        return _InFlight(meta, result_ref, asyncio.wrap_future(result_ref.future()),
                         asyncio.wrap_future(backbone_done.future()))

    def _order(self) -> dict:
        """This submission's number and its predecessor's, so the fused actor queues the ticks in this order
        even where Ray starts its async calls out of order (PerceptionActor._turn)."""
        order = {"seq": self.submitted, "after": self.last_seq}
        self.last_seq = self.submitted
        return order

    @staticmethod
    def _queued(meta: TickMeta, result_ref: Any) -> _InFlight:
        """A tick submitted whole: the actor queues it (its first stage counts as free at once)."""
        admitted = asyncio.get_running_loop().create_future()
        admitted.set_result(None)
        return _InFlight(meta, result_ref, asyncio.wrap_future(result_ref.future()), admitted)

    @staticmethod
    def _meta(fs: FrameSet, submit_start_ns: int) -> TickMeta:
        meta = TickMeta.from_frame_set(fs)
        return TickMeta(**{**meta.__dict__, "timings": meta.timings + (StageTiming("submit", submit_start_ns, time.time_ns()),)})

    def _finish(self, job: _InFlight) -> TickResult | DropRecord:
        now = time.time_ns()
        try:
            result: TickResult = job.fut.result()
            self._learn(result)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a drop record
            reason, detail = classify_failure(exc)
            if reason == "actor_restart":
                self.recovering = True
            record = drop_for(job.meta, reason, detail)
            if self.sink is not None:
                self.sink.write.remote(record)
            return record
        bev_end = max(t.end_ns for t in result.timings)
        deliver = StageTiming("deliver", bev_end, now)
        if self.sink is not None:
            self.sink.write.remote(job.ref, deliver)  # by reference: the driver does not re-send it
        return result.with_timing(deliver)

    def _drop(self, record: DropRecord) -> DropRecord:
        if self.sink is not None:
            self.sink.write.remote(record)
        return record

    def _ended(self, record: TickResult | DropRecord) -> TickResult | DropRecord:
        """A tick ended: a live ingest actor may admit the next set in its place."""
        if self.live and self.feeder is not None:
            self.feeder.finished([record.frame_id])
        return record

    def _set_recovering(self, on: bool) -> None:
        """Live: while an actor restarts, the ingest drops arriving sets as 'actor_restart' (a live
        stream does not wait); they are not 'overload', the pipeline is not short of capacity."""
        if self.live and self.feeder is not None:
            self.feeder.block("actor_restart" if on else None, "a pipeline actor is restarting (dropped at ingest)" if on else "")

    def _submit_ready(self, cap: int) -> float | None:
        """Submit waiting sets while the first stage is free and under the cap: a tick never queues at the
        backbone, so the newest waiting set goes next (live) and latency is the stages' sum. -> the monotonic
        time the next may go (a replay's just-in-time release), or None."""
        waiting, inflight = self.waiting, self.inflight
        while (waiting and len(inflight) < cap and not self.recovering
               and all(job.first_stage.done() for job in inflight)):
            release_at = self._release_at(inflight)
            if release_at is not None and release_at > time.monotonic():
                return release_at
            inflight.append(self._submit(waiting.popleft()))
            self.max_seen_in_flight = max(self.max_seen_in_flight, len(inflight))
        return None

    def _live_drops(self, cap: int) -> list[DropRecord]:
        """Live: the waiting sets dropped now. Sets admitted by the ingest actor (their cameras already
        encoded) are never dropped for capacity; while an actor restarts every waiting set goes."""
        out, waiting = [], self.waiting
        while waiting and (self.recovering or (len(waiting) > self.cfg.live_queue and not _admitted(waiting[0]))):
            old = waiting.popleft()
            old = old.fs if isinstance(old, Staged) else old
            if self.recovering:
                record = drop_for(old, "actor_restart", "a pipeline actor is restarting (the set waited in the driver)")
            else:
                record = drop_for(old, "overload", f"{cap} ticks in flight and {len(waiting)} waiting")
            out.append(self._ended(self._drop(record)))
        return out

    def _take(self, item: Any) -> DropRecord | None:
        """An item from the feeder: queued to wait for a slot, or its drop record (refused at ingest, or
        failing the input checks); END marks the source done."""
        if item is END:
            self.source_done = True
        elif isinstance(item, SourceError):
            raise item.exc
        elif isinstance(item, DropRecord):  # refused or dropped at ingest
            return self._drop(item)
        else:
            fs = item.fs if isinstance(item, Staged) else item
            checked = isinstance(item, Staged) and item.checked
            problem = None if checked else check_frame_set(fs, self.cfg.min_cameras)
            if problem is not None:
                return self._drop(drop_for(fs, problem[0], problem[1]))
            self.waiting.append(item)
        return None

    def _waits(self, cap: int, feeder: Any) -> set:
        """What the event loop waits for next: the next set (replay: only when a slot is free, which is the
        backpressure; live: always), the oldest tick, the busy first stage while sets wait, a restart."""
        wait_set: set = set()
        if not self.source_done and (self.live or (len(self.inflight) + len(self.waiting) < cap and not self.waiting)):
            if self.get_task is None:
                feeder.want()
                self.get_task = asyncio.ensure_future(feeder.queue.get())
            wait_set.add(self.get_task)
        if self.inflight:
            wait_set.add(self.inflight[0].fut)
            busy = [job.first_stage for job in self.inflight if not job.first_stage.done()]
            if busy and self.waiting:
                wait_set.add(busy[0])
        if self.recover_task is not None:
            wait_set.add(self.recover_task)
        return wait_set

    async def run(self, feeder: "SourceFeeder | ActorFeeder") -> AsyncIterator[TickResult | DropRecord]:
        self.feeder = feeder
        self.waiting: deque[FrameSet | Staged] = deque()
        self.inflight: deque[_InFlight] = deque()
        self.source_done = False
        self.get_task: asyncio.Task | None = None
        self.recover_task: asyncio.Task | None = None
        blocked = False
        cap = self.cfg.cap(self.live)
        try:
            while True:
                if self.recovering and not blocked:
                    blocked = True
                    self._set_recovering(True)
                if self.recovering and not self.inflight and self.recover_task is None:
                    # the ticks sent to the dead actor have all failed: wait for Ray to bring it back
                    self.recover_task = asyncio.ensure_future(self._await_actors())
                release_at = self._submit_ready(cap)
                if self.live:
                    for record in self._live_drops(cap):
                        yield record
                if self.source_done and not self.waiting and not self.inflight and self.recover_task is None:
                    return
                wait_set = self._waits(cap, feeder)
                timer = None
                if release_at is not None:
                    timer = asyncio.ensure_future(asyncio.sleep(max(release_at - time.monotonic(), 0.0)))
                    wait_set.add(timer)
                await asyncio.wait(wait_set, return_when=asyncio.FIRST_COMPLETED)
                if timer is not None:
                    timer.cancel()
                if self.recover_task is not None and self.recover_task.done():
                    self.recover_task.result()  # raises if the actor was not restarted
                    self.recover_task = None
                    if blocked:
                        blocked = False
                        self._set_recovering(False)
                while self.inflight and self.inflight[0].fut.done():
                    yield self._ended(self._finish(self.inflight.popleft()))
                if self.get_task is not None and self.get_task.done():
                    item, self.get_task = self.get_task.result(), None
                    record = self._take(item)
                    if record is not None:
                        yield record
        finally:
            self._abandon()

    def _abandon(self) -> None:
        """The stream ended or its consumer stopped early: do not leave work behind."""
        if self.get_task is not None:
            self.get_task.cancel()
        if self.recover_task is not None:
            self.recover_task.cancel()
        for job in self.inflight:
            try:
                ray.cancel(job.ref, force=False)
            except Exception:  # noqa: BLE001 - already finished or not cancellable
                pass


def _admitted(item: Any) -> bool:
    """A set the ingest actor admitted (per-camera encoding under way): it has a slot of its own."""
    return isinstance(item, Staged) and bool(item.camera_refs)
