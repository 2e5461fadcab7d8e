"""Ray actors: thin wrappers over the stages in stages.py (and the sink in sink.py).

Actors are plain classes here; supervisor.py turns them into Ray actors with the resources,
restarts and placement of runtime.yaml. Stages that share a node run in ONE process, the
PerceptionActor (a thread per stage: torch releases the GIL, so the backbone of tick t+1 overlaps
the BEV step of tick t, and features never cross the object store); only when placement puts them
on different nodes do they run as a BackboneActor and a BevActor. Those are synchronous actors (one
call at a time, in submission order), which is what keeps the BEV actor's temporal state in frame
order; the PerceptionActor keeps it with a single BEV thread fed in submission order.

Constructor arguments are small values only (the model factory: options + a weights path; the
state store's actor NAME, not its handle): a handle or any large argument would sit in the object
store, and a restarted actor could not be constructed again once it is gone (ray issue 53727).
"""
from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import ray

from runtime.stages import (BackboneStage, BevStage, CameraFeatures, FeaturePacket, TickMeta, packet_from_cameras,
                            rectify_config_of)

ORDER_WAIT_S = 2.0  # PerceptionActor: the longest a tick waits for its predecessor to be queued


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def _set_threads(n: int) -> None:
    """torch's intra-op threads of the CALLING thread (OpenMP keeps the count per thread): each stage
    thread of a PerceptionActor sets its own."""
    import torch

    torch.set_num_threads(n)


def state_store(store: Any) -> Any:
    """The StateStore actor from its name (what the stage actors are constructed with), or a handle as is."""
    return ray.get_actor(store) if isinstance(store, str) else store


class _StageActor:
    """What the driver and the benchmarks ask of both stage actors: where and as which process they run,
    their CPU time, and their intra-op thread count (stages.*.torch_threads 0: set per stream,
    Supervisor.threads_for)."""

    def node_id(self) -> str:
        return _node_id()

    def pid(self) -> int:
        return os.getpid()

    def cpu_seconds(self) -> float:
        """CPU time of this actor's process so far (all threads): benchmarks difference it."""
        return time.process_time()

    def set_threads(self, n: int) -> None:
        _set_threads(n)

    def threads(self) -> int:
        import torch

        return torch.get_num_threads()


class StateStore:
    """Keeps what a stage actor must get back when Ray restarts it, outside the actors so it survives their
    death: the latest temporal-state checkpoint and the per-stream thread counts (Supervisor.threads_for)."""

    def __init__(self) -> None:
        self.frame_id: int | None = None
        self.data: bytes | None = None
        self.starts: dict[str, int] = {}
        self.threads: dict[str, int] = {}

    def save(self, frame_id: int, data: bytes) -> None:
        self.frame_id, self.data = frame_id, data

    def load(self) -> tuple[int, bytes] | None:
        return None if self.data is None else (self.frame_id, self.data)

    def note_start(self, stage: str) -> int:
        """Count actor (re)starts per stage; returns how many times `stage` has started."""
        self.starts[stage] = self.starts.get(stage, 0) + 1
        return self.starts[stage]

    def restarts(self) -> dict[str, int]:
        return {k: v - 1 for k, v in self.starts.items()}

    def set_threads(self, stage: str, n: int) -> None:
        self.threads[stage] = n

    def threads_of(self, stage: str, default: int) -> int:
        """The thread count the current stream gave `stage`, or its start-up count."""
        return self.threads.get(stage, default)


class BackboneActor(_StageActor):
    """Preprocessing + backbone + image segmentation of all cameras of a tick, in one call."""

    def __init__(self, model_factory: Callable[[], Any], torch_threads: int, seg_stride: int, store: Any,
                 decode_threads: int = 1) -> None:
        store = state_store(store)
        _set_threads(ray.get(store.threads_of.remote("backbone", torch_threads)))  # a restart keeps the stream's
        self.stage = BackboneStage(model_factory(), seg_stride, decode_threads)
        self.cameras = 0
        ray.get(store.note_start.remote("backbone"))

    def run(self, images: list, meta: TickMeta):
        """-> (packet, its timing): called with num_returns=2, so the driver can await the small
        second return to learn the stage is free, without fetching the features."""
        packet = self.stage.run(images, meta)
        self.cameras += len(images)
        return packet, packet.timing

    def warmup(self) -> FeaturePacket:
        return self.stage.warmup()

    def rectify_config(self) -> Any:
        """The model's rectification settings (the driver shrinks images before the object store as the
        rectifier would, runtime/prescale.py), or None for a model without one."""
        return rectify_config_of(self.stage.model)

    def encode_cameras(self, images: list, channels: tuple, intrinsics: np.ndarray, sensor_to_ego: np.ndarray):
        """Cameras that arrived since the last call (per-camera encoding of live streams); called with
        num_returns=len(images), so each camera's features get their own ObjectRef."""
        cams = self.stage.run_cameras(images, channels, intrinsics, sensor_to_ego)
        self.cameras += len(cams)
        return cams[0] if len(cams) == 1 else tuple(cams)

    def cameras_encoded(self) -> int:
        """Camera images encoded so far (warm-up excluded): benchmarks divide CPU time by it."""
        return self.cameras

    def warmup_cameras(self) -> int:
        return self.stage.warmup_cameras()


class _Checkpointer:
    """Serialises temporal-state checkpoints and sends them to the StateStore in a thread, off the
    tick's critical path (a few MB each: ~5-10 ms that every Nth tick would otherwise wait for). If a
    checkpoint is still being written when the next is due, the newer state replaces the waiting one."""

    def __init__(self, stage: BevStage, store: Any) -> None:
        self.stage, self.store = stage, store
        self.q: queue.Queue = queue.Queue(maxsize=1)
        threading.Thread(target=self._run, name="bevstream-checkpoint", daemon=True).start()

    def submit(self, frame_id: int, snapshot: Any) -> None:
        try:
            self.q.get_nowait()  # an older checkpoint not started yet: the newer one supersedes it
        except queue.Empty:
            pass
        self.q.put((frame_id, snapshot))

    def _run(self) -> None:
        while True:
            frame_id, snapshot = self.q.get()  # BevStage.snapshot()
            self.store.save.remote(frame_id, self.stage.checkpoint(snapshot))  # by value into the store actor


class _BevSide:
    """The BEV stage with what makes it stateful across restarts: its temporal state restored from the
    StateStore's last checkpoint at start, checkpointed every `every` ticks (in a thread)."""

    def __init__(self, model: Any, store: Any, every: int, stages: tuple[str, ...]) -> None:
        self.every, self.ticks = every, 0
        self.stage = BevStage(model)
        self.checkpointer = _Checkpointer(self.stage, store)
        self.restored_from: int | None = None
        self.start_count = ray.get([store.note_start.remote(s) for s in stages])[-1]
        saved = ray.get(store.load.remote())
        if saved is not None:  # a restart: continue from the last checkpoint
            self.restored_from = saved[0]
            self.stage.restore(saved[1])

    def status(self) -> dict:
        return {"ticks": self.ticks, "starts": self.start_count, "restored_from": self.restored_from}

    def warmup(self, packet: FeaturePacket) -> None:
        if self.restored_from is None:  # never on a restart: the restored state must stay
            self.stage.warmup(packet)

    def run(self, packet: FeaturePacket, meta: TickMeta):
        result = self.stage.run(packet, meta)
        self.ticks += 1
        if self.every and self.ticks % self.every == 0:
            self.checkpointer.submit(meta.frame_id, self.stage.snapshot())
        return result


class BevActor(_StageActor):
    """BEV encoder + video module + heads; holds the temporal state, checkpointed every N ticks."""

    def __init__(self, model_factory: Callable[[], Any], torch_threads: int, store: Any, checkpoint_every: int) -> None:
        store = state_store(store)
        _set_threads(ray.get(store.threads_of.remote("bev", torch_threads)))  # a restart keeps the stream's
        self.bev = _BevSide(model_factory(), store, checkpoint_every, ("bev",))

    def status(self) -> dict:
        return self.bev.status()

    def warmup(self, packet: FeaturePacket) -> None:
        self.bev.warmup(packet)

    def run_cameras(self, meta: TickMeta, *cams: CameraFeatures):
        """A tick whose cameras were encoded one by one as they arrived (Ray resolved the refs)."""
        return self.bev.run(packet_from_cameras(cams, meta.channels), meta)

    def run(self, packet: FeaturePacket, meta: TickMeta):
        return self.bev.run(packet, meta)


class _Pacer:
    """Just-in-time backbone starts in a PerceptionActor with ticks in flight > 1: the next tick's backbone
    starts when its features will meet a free BEV thread (the BEV step of the tick before it started at
    t0: free at t0 + BEV duration), not as soon as the backbone thread is free; otherwise, with a BEV step
    slower than the backbone, each tick's features wait for the BEV thread (latency, no throughput), and
    the early backbone slows the BEV step it shares the cores with."""

    MARGIN_S = 0.002

    def __init__(self) -> None:
        self.est: dict[str, float] = {}  # running estimates of the stage durations (s)

    def learn(self, stage: str, seconds: float) -> None:
        old = self.est.get(stage)
        self.est[stage] = seconds if old is None else 0.8 * old + 0.2 * seconds

    def wait_for(self, prev_bev: tuple[threading.Event, list] | None) -> None:
        """In the backbone thread, before a tick's backbone: `prev_bev` = (started, [t0]) of the BEV job
        queued before this tick's, or None."""
        if prev_bev is None or len(self.est) < 2:
            return
        started, t0 = prev_bev
        if not started.wait(timeout=2 * self.est["bev"]):
            return
        delay = t0[0] + self.est["bev"] - self.est["backbone"] - self.MARGIN_S - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, self.est["bev"]))


class PerceptionActor(_StageActor):
    """Both stages of a node in one process (supervisor.py: when backbone and BEV share their placement).

    A tick is ONE call (`tick`: images in, TickResult out): no hand-over between processes, and the
    features never leave the process. Each stage has its own thread (a one-thread executor with its own
    torch thread count): `tick` queues its backbone job and, at once, its BEV job, which waits for that
    backbone result; both executors run in submission order, so the BEV steps follow the frame order
    while the backbone of the next tick runs beside the BEV step of this one (ticks in flight > 1). It is
    an async actor: the calls only queue work, so status calls answer while ticks run. Live per-camera
    encoding (`encode_cameras`, from the ingest actor) runs on the backbone thread, `run_cameras` on the
    BEV thread."""

    STAGES = ("backbone", "bev")

    def __init__(self, model_factory: Callable[[], Any], threads: dict, seg_stride: int, store: Any,
                 checkpoint_every: int, decode_threads: int = 1) -> None:
        store = state_store(store)
        self.pools: dict[str, ThreadPoolExecutor] = {}
        for name in self.STAGES:  # a restart keeps the stream's thread counts
            n = ray.get(store.threads_of.remote(name, threads[name]))
            self.pools[name] = ThreadPoolExecutor(1, thread_name_prefix=f"bevstream-{name}", initializer=_set_threads, initargs=(n,))
        self.stage = BackboneStage(model_factory(), seg_stride, decode_threads)
        self.cameras = 0
        self.bev = _BevSide(model_factory(), store, checkpoint_every, self.STAGES)
        self.pacer = _Pacer()
        self.last_bev: tuple[threading.Event, list] | None = None  # (started, [t0]) of the last queued BEV job
        self.queued: set[int] = set()  # the driver's numbers of the ticks queued on the BEV thread (recent ones)

    def _on(self, stage: str, fn: Callable, *args: Any) -> Future:
        return self.pools[stage].submit(fn, *args)

    def _backbone(self, images: list, meta: TickMeta, prev_bev: Any) -> FeaturePacket:
        self.pacer.wait_for(prev_bev)
        t0 = time.monotonic()
        packet = self.stage.run(images, meta)
        self.pacer.learn("backbone", time.monotonic() - t0)
        self.cameras += len(images)
        return packet

    def _bev(self, features: Future, meta: TickMeta, mark: tuple[threading.Event, list]):
        packet = features.result()
        t0 = time.monotonic()
        mark[1].append(t0)
        mark[0].set()
        try:
            return self.bev.run(packet, meta)
        finally:
            self.pacer.learn("bev", time.monotonic() - t0)

    async def _turn(self, after: int | None) -> None:
        """Wait until the tick the driver submitted just before this one (`after`) is queued: Ray may start an
        async actor's calls out of submission order (when one call's arguments resolve first), and the BEV
        steps must run in frame order. A predecessor that never comes (it went to an actor that died) is
        waited for ORDER_WAIT_S at most."""
        deadline = time.monotonic() + ORDER_WAIT_S
        while after is not None and after not in self.queued and time.monotonic() < deadline:
            await asyncio.sleep(0.001)

    def _mark_queued(self, seq: int | None) -> None:
        if seq is not None:
            self.queued.add(seq)
            self.queued.difference_update([s for s in self.queued if s < seq - 64])

    async def tick(self, images: list, meta: TickMeta, seq: int | None = None, after: int | None = None):
        """One frame set: backbone then BEV -> TickResult (the images arrive zero-copy from the store). `seq`
        numbers the driver's submissions; `after` is the one submitted just before (None: the first)."""
        await self._turn(after)
        mark: tuple[threading.Event, list] = (threading.Event(), [])
        features = self._on("backbone", self._backbone, images, meta, self.last_bev)
        result = self._on("bev", self._bev, features, meta, mark)  # queued now: frame order
        self.last_bev = mark
        self._mark_queued(seq)
        return await asyncio.wrap_future(result)

    async def run_cameras(self, meta: TickMeta, *cams: CameraFeatures, seq: int | None = None, after: int | None = None):
        """A tick whose cameras were encoded one by one as they arrived (Ray resolved the refs); `seq` and
        `after` as for `tick`."""
        await self._turn(after)
        result = self._on("bev", lambda: self.bev.run(packet_from_cameras(cams, meta.channels), meta))
        self._mark_queued(seq)
        return await asyncio.wrap_future(result)

    async def encode_cameras(self, images: list, channels: tuple, intrinsics: np.ndarray, sensor_to_ego: np.ndarray):
        """As BackboneActor.encode_cameras, on the backbone thread."""
        cams = await asyncio.wrap_future(self._on("backbone", self.stage.run_cameras, images, channels, intrinsics, sensor_to_ego))
        self.cameras += len(cams)
        return cams[0] if len(cams) == 1 else tuple(cams)

    async def warmup(self, cameras: bool = False) -> None:
        """One synthetic tick through both stages (with `cameras`, every per-camera batch size too)."""
        packet = await asyncio.wrap_future(self._on("backbone", self.stage.warmup))
        await asyncio.wrap_future(self._on("bev", self.bev.warmup, packet))
        if cameras:
            await asyncio.wrap_future(self._on("backbone", self.stage.warmup_cameras))

    def status(self) -> dict:
        return self.bev.status()

    def rectify_config(self) -> Any:
        return BackboneActor.rectify_config(self)

    def cameras_encoded(self) -> int:
        return self.cameras

    async def set_threads(self, n: int, stage: str | None = None) -> None:
        """Each stage thread's torch thread count (stage None: both)."""
        for name in self.STAGES if stage is None else (stage,):
            await asyncio.wrap_future(self._on(name, _set_threads, n))

    async def threads(self, stage: str = "bev") -> int:
        import torch

        return await asyncio.wrap_future(self._on(stage, torch.get_num_threads))


class SinkActor:
    """Writes the run directory (see sink.py) from tick results passed by reference."""

    def __init__(self, out_dir: str, expected_samples: list[str] | None, max_boxes: int, save_seg: bool = False) -> None:
        from runtime.sink import ResultSink

        self.sink = ResultSink(out_dir, expected_samples=expected_samples, max_boxes=max_boxes, save_seg=save_seg)

    def node_id(self) -> str:
        return _node_id()
    def write(self, record, extra_timing=None) -> None:
        if extra_timing is not None:
            record = record.with_timing(extra_timing)
        self.sink.write(record)

    def close(self, summary: dict) -> dict:
        return self.sink.close(summary)
