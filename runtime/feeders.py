"""Feeding frame sets to the tick scheduler (pipeline.py): a source's frame sets, synchronised when the
source is live (source_frame_sets); a replay read in a thread with backpressure (SourceFeeder); a live
stream pulled from the ingest actor (ActorFeeder)."""
from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from typing import Any, Callable, Iterator

import ray

from runtime.config import SyncConfig
from runtime.handoff import INGEST_END, Staged
from schema.messages import FrameSet, StageTiming
from schema.results import DropRecord

END = object()


class SourceError:
    def __init__(self, exc: BaseException):
        self.exc = exc


class _Timeout:
    """A wake-up with no frame: time to check the synchroniser's deadlines on the wall clock."""


def _frames_with_timeouts(frames: Iterator[Any], seconds: Callable[[], float]) -> Iterator[Any]:
    """The frames of a blocking iterator, read in a thread; yields `_Timeout` when none came for
    `seconds()` (re-evaluated each wait). Closing this generator stops the reader between frames."""
    q: queue.Queue = queue.Queue()
    stop = threading.Event()

    def read() -> None:
        try:
            for item in frames:
                q.put(item)
                if stop.is_set():
                    break
            q.put(END)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer
            q.put(SourceError(exc))
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="bevstream-camera-bus", daemon=True)
    reader.start()
    try:
        while True:
            try:
                item = q.get(timeout=seconds())
            except queue.Empty:
                yield _Timeout
                continue
            if item is END:
                return
            if isinstance(item, SourceError):
                raise item.exc
            yield item
    finally:
        stop.set()


def source_frame_sets(source: Any, sync_cfg: SyncConfig, late_counter: list[int],
                      on_frame: Callable[[Any], None] | None = None,
                      on_discard: Callable[[Any], None] | None = None) -> Iterator[FrameSet]:
    """The frame sets of a source; a live source's raw camera frames go through the synchroniser
    configured in runtime.yaml (late frames are counted in `late_counter[0]`).

    Live frames carrying an arrival time also wake the synchroniser on the wall clock (SensorClock),
    so a set missing a camera goes out `sync.max_wait_ms` after that camera's exposure, not when the
    next frame happens to arrive. `on_frame(frame)` sees every raw frame as it arrives (the ingest
    actor starts its backbone work there); `on_discard(frame)` every frame that will not be in a set."""
    if getattr(source, "is_live", False) and hasattr(source, "camera_frames"):
        from replay.sync import SensorClock, make_synchronizer

        sync = make_synchronizer(source, tolerance_us=int(sync_cfg.tolerance_ms * 1000),
                                 max_wait_us=int(sync_cfg.max_wait_ms * 1000))
        clock = SensorClock()
        frames = _frames_with_timeouts(iter(source.camera_frames()), lambda: clock.seconds_until(sync.next_deadline_us()))
        try:
            for frame in frames:
                if frame is _Timeout:
                    now = clock.now_us()
                    if now is None:
                        continue
                    out = sync.poll(math.ceil(now))  # (ceil: a float deadline just past never spins the wait)
                else:
                    clock.observe(frame)
                    if on_frame is not None:
                        on_frame(frame)
                    out = sync.feed(frame)
                late_counter[0] += len(out.late) + len(out.rejected)
                if on_discard is not None:
                    for f in list(out.late) + [f for f, _ in out.rejected]:
                        on_discard(f)
                for fs in out.sets:
                    yield with_exposures(fs)
            for fs in sync.flush().sets:
                yield with_exposures(fs)
        finally:
            frames.close()
    else:
        yield from source.frame_sets()


def with_exposures(fs: FrameSet) -> FrameSet:
    """A live set with its 'exposures' timing: from its first camera's exposure to its last (the rig's
    spread; the sensor clock of a live source is the wall clock). The report measures a tick's latency
    from both ends of it (report.py: since_first_exposure_ms, since_last_exposure_ms)."""
    stamps = [c.timestamp_us for c in fs.cameras] or [fs.timestamp_us]
    return fs.with_timing(StageTiming("exposures", min(stamps) * 1000, max(stamps) * 1000))


class SourceFeeder:
    """Reads a (blocking) source in a thread and hands frame sets to the event loop.

    Replay: the thread loads a set when the pipeline asks for one (`want`), plus `read_ahead` sets
    ahead of those asks, so reading stops while the pipeline is full (backpressure, no loss). With
    read_ahead 0 a set is loaded the moment a slot frees: its load never competes with the actors for
    the cores and its latency holds no wait in this queue. Live: unbounded hand-off; the scheduler
    applies the drop policy. Each set's images are `ray.put` here, in this thread, so the event loop
    never blocks on the copy, and each set gets an 'ingest' timing (replay: the time to load and put
    it; live: its arrival)."""

    def __init__(self, frame_sets: Iterator[FrameSet], live: bool, loop: asyncio.AbstractEventLoop,
                 prescale: Callable[[FrameSet], FrameSet] | None = None, read_ahead: int = 1):
        self.live = live
        self.prescale = prescale  # shrinks the images as the rectifier would, before the put (prescale.py)
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self._credits = None if live else threading.Semaphore(read_ahead)  # replay: sets it may load now
        self._stop = threading.Event()
        self._iter = frame_sets
        self._thread = threading.Thread(target=self._run, name="bevstream-source", daemon=True)

    def start(self) -> "SourceFeeder":
        self._thread.start()
        return self

    def _hand_over(self, item: Any) -> bool:
        if self.live:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
            return True
        fut = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        while not self._stop.is_set():
            try:
                fut.result(timeout=0.1)
                return True
            except TimeoutError:
                continue
        fut.cancel()
        return False

    def want(self) -> None:
        """The pipeline takes one more set (replay: one more may be loaded)."""
        if self._credits is not None:
            self._credits.release()

    def _may_load(self) -> bool:
        if self._credits is None:
            return True
        while not self._stop.is_set():
            if self._credits.acquire(timeout=0.1):
                return True
        return False

    def _run(self) -> None:
        try:
            while self._may_load():
                start = time.time_ns()
                try:
                    fs = next(self._iter)
                except StopIteration:
                    break
                if isinstance(fs, DropRecord):  # passed over by the source (a real-time replay behind the log)
                    if not self._hand_over(fs):
                        return
                    continue
                if self.prescale is not None:
                    fs = self.prescale(fs)
                put_start = time.time_ns()
                ref = ray.put([c.image for c in fs.cameras])  # once; the backbone gets it by reference
                end = time.time_ns()
                # 'put': the object-store copy alone (a hop of the runtime's own cost, bench/runtime.py)
                fs = fs.with_timing(StageTiming("put", put_start, end)).with_timing(StageTiming("ingest", end if self.live else start, end))
                if not self._hand_over(Staged(fs, ref, checked=False)):
                    return
        except BaseException as exc:  # surfaced in the event loop
            self._hand_over(SourceError(exc))
            return
        self._hand_over(END)

    def finished(self, frame_ids: list) -> None:
        """(Admission lives in the ingest actor only.)"""

    def block(self, reason: str | None, detail: str = "") -> None:
        """(Admission lives in the ingest actor only.)"""

    def stop(self) -> None:
        self._stop.set()
        close = getattr(self._iter, "close", None)
        self._thread.join(timeout=2.0)
        if close is not None and not self._thread.is_alive():
            close()


class ActorFeeder:
    """Pulls ready frame sets from the ingest actor into the event loop (live sources)."""

    def __init__(self, ingest: Any):
        self.ingest = ingest
        self.queue: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self._block_seq = 0  # numbers the block reports (block)

    def start(self) -> "ActorFeeder":
        self._task = asyncio.ensure_future(self._run())
        return self

    def want(self) -> None:
        """(A live source is read as it comes.)"""

    async def _run(self) -> None:
        try:
            await self.ingest.start.remote()
            while True:
                for item in await self.ingest.next.remote(16, 0.2):
                    if isinstance(item, str) and item == INGEST_END:
                        self.queue.put_nowait(END)
                        return
                    if isinstance(item, tuple) and item and item[0] == "__error__":
                        self.queue.put_nowait(SourceError(RuntimeError(f"live source failed in the ingest actor: {item[1]}")))
                        return
                    self.queue.put_nowait(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the ingest actor died
            self.queue.put_nowait(SourceError(exc))

    def finished(self, frame_ids: list) -> None:
        """These frame sets' ticks ended: the ingest actor may admit new sets in their place."""
        self.ingest.finished.remote(list(frame_ids))

    def block(self, reason: str | None, detail: str = "") -> None:
        """An actor is restarting (reason) or back (None): the ingest actor drops or admits new sets. The
        reports are numbered: the threaded ingest actor may run two calls out of order, and the last word
        must win (a 'back' overtaken by its 'restarting' blocked a stream for good)."""
        self._block_seq += 1
        self.ingest.block.remote(reason, detail, self._block_seq)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        try:
            self.ingest.stop.remote()
        except Exception:  # noqa: BLE001 - already gone
            pass
