"""Ray actors: thin wrappers over the stages in stages.py (and the sink in sink.py).

Actors are plain classes here; supervisor.py turns them into Ray actors with the resources,
restarts and placement of runtime.yaml. They are synchronous actors (one call at a time, in
submission order), which is what keeps the BEV actor's temporal state in frame order.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np
import ray

from runtime.messages import CAMERA_CHANNELS
from runtime.stages import BackboneStage, BevStage, CameraFeatures, FeaturePacket, TickMeta, packet_from_cameras


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


class StateStore:
    """Keeps the latest temporal-state checkpoint outside the BEV actor, so it survives the actor's death."""

    def __init__(self) -> None:
        self.frame_id: int | None = None
        self.data: bytes | None = None
        self.starts: dict[str, int] = {}

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


INGEST_END = "__end__"
_NO_IMAGE = np.zeros((0, 0, 3), np.uint8)  # frame sets leave the ingest actor without pixels: those go by reference


def _encodable(frame: Any) -> bool:
    """Worth starting the backbone on (the set's full check comes at emission, check_frame_set)."""
    img, k = frame.image, np.asarray(frame.intrinsic)
    return (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            and min(img.shape[:2]) >= 8 and k.shape == (3, 3) and bool(np.all(np.isfinite(k)))
            and frame.sensor_to_ego.is_finite())


class CameraEncoder:
    """Sends a live source's cameras to the backbone actor as they arrive, batched dynamically.

    A camera goes when the backbone is idle; otherwise it waits and goes together with the cameras
    that arrived meanwhile (one call, one ObjectRef per camera) when a later camera finds the backbone
    idle or, at the latest, when its set is complete. With the rig's `firing_order` known, the early
    cameras also go in pairs (a camera waits for the next one, ~8 ms later on a nuScenes rig), while
    the last two of the order go alone at once: the last camera's features, the ones the BEV step
    waits for, never share a call. One-image batches cost ~1.4x per camera on CPU (PyTorch's small-
    batch conv paths), so pairs and batching under load keep the cost near the set-at-once cost.
    A queue at the backbone never grows: a complete set whose cameras would queue behind more than
    `max_calls` unfinished calls is shed (its ingest drop record says 'overload')."""

    def __init__(self, backbone: Any, max_calls: int = 2, firing_order: tuple[str, ...] | None = None) -> None:
        self.backbone = backbone
        self.max_calls = max_calls
        self.alone = frozenset(firing_order[-2:]) if firing_order and len(firing_order) > 2 else None
        self.held: dict[int, Any] = {}  # id(frame) -> frame: arrived, not sent yet (arrival order)
        self.sent: dict[int, tuple[Any, Any]] = {}  # id(frame) -> (frame, ObjectRef of its CameraFeatures)
        self.calls: list = []  # one ObjectRef per unfinished call (all returns of a call finish together)
        self.shed = 0

    def unfinished(self) -> int:
        """Backbone calls sent and not finished yet (a finished one may have failed: its set says so)."""
        if self.calls:
            ready, _ = ray.wait(self.calls, num_returns=len(self.calls), timeout=0, fetch_local=False)
            done = set(ready)
            self.calls = [r for r in self.calls if r not in done]
        return len(self.calls)

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

    def arrived(self, frame: Any) -> None:
        """A camera just arrived (ingest thread, before the synchroniser sees it): send it, with any held
        ones, if the backbone is idle."""
        if frame.channel in CAMERA_CHANNELS and _encodable(frame):
            self.held[id(frame)] = frame
            ready = self.alone is None or frame.channel in self.alone or len(self.held) >= 2
            if ready and self.unfinished() == 0:
                self._send(list(self.held.values()))
        horizon = frame.timestamp_us - 2_000_000  # frames of cycles long gone (the synchroniser reports them)
        for table in (self.held, self.sent):
            for key in [k for k, v in table.items() if (v[0] if isinstance(v, tuple) else v).timestamp_us < horizon]:
                del table[key]

    def discard(self, frame: Any) -> None:
        """A late or rejected frame, or one of a dropped set: its features will not be used."""
        self.held.pop(id(frame), None)
        self.sent.pop(id(frame), None)

    def refs_for(self, cameras: tuple) -> tuple | None:
        """The feature refs of a set's (checked) cameras, in their order, sending held ones now; None
        when the set is shed (the backbone is behind) or a camera never reached the encoder."""
        unsent = [c for c in cameras if id(c) in self.held]
        known = all(id(c) in self.held or id(c) in self.sent for c in cameras)
        if not known or (unsent and self.unfinished() >= self.max_calls):
            if known:
                self.shed += 1
            for c in cameras:
                self.discard(c)
            return None
        if unsent:
            self._send(unsent)
        return tuple(self.sent.pop(id(c))[1] for c in cameras)


class IngestActor:
    """A live source's camera bus + synchroniser in its own process. Each frame set is checked, and
    the driver receives it without pixels plus references:
    - with a `backbone` actor (pipeline.live_encode: camera) and a source of raw camera frames, the
      cameras go to the backbone as they arrive (CameraEncoder), and the set carries the per-camera
      feature refs: when its last camera lands, only that camera's backbone + the BEV step remain;
    - otherwise its images are `ray.put` once here (the set goes through the backbone at once)."""

    def __init__(self, source: Any, sync_cfg: Any, min_cameras: int, backbone: Any = None) -> None:
        self.source, self.sync_cfg, self.min_cameras = source, sync_cfg, min_cameras
        self.encoder = None
        if backbone is not None and hasattr(source, "camera_frames"):
            offsets = dict(getattr(source, "channel_offsets_us", None) or {})
            order = tuple(sorted(offsets, key=offsets.get)) if len(set(offsets.values())) > 1 else None
            self.encoder = CameraEncoder(backbone, firing_order=order)
        self.q: queue.Queue = queue.Queue()
        self.late = [0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bevstream-ingest", daemon=True)

    def node_id(self) -> str:
        return _node_id()

    def start(self) -> str:
        self._thread.start()
        return _node_id()

    def _run(self) -> None:
        from runtime.messages import StageTiming
        from runtime.pipeline import Staged, drop_for, source_frame_sets
        from runtime.validate import check_frame_set

        enc = self.encoder
        hooks = dict(on_frame=enc.arrived, on_discard=enc.discard) if enc is not None else {}
        try:
            for fs in source_frame_sets(self.source, self.sync_cfg, self.late, **hooks):
                if self._stop.is_set():
                    break
                start = time.time_ns()
                problem = check_frame_set(fs, self.min_cameras)
                if problem is not None:
                    if enc is not None:
                        for c in fs.cameras:
                            enc.discard(c)
                    self.q.put(drop_for(fs.with_timing(StageTiming("ingest", start, time.time_ns())), *problem))
                    continue
                light = replace(fs, cameras=tuple(replace(c, image=_NO_IMAGE) for c in fs.cameras))
                if enc is not None:
                    shed_before = enc.shed
                    refs = enc.refs_for(fs.cameras)
                    if refs is not None:
                        self.q.put(Staged(light.with_timing(StageTiming("ingest", start, time.time_ns())), camera_refs=refs))
                        continue
                    if enc.shed > shed_before:
                        self.q.put(drop_for(fs.with_timing(StageTiming("ingest", start, time.time_ns())), "overload",
                                            f"backbone behind: {enc.max_calls} camera batches unfinished"))
                        continue
                ref = ray.put([c.image for c in fs.cameras])  # the only copy of the pixels
                self.q.put(Staged(light.with_timing(StageTiming("ingest", start, time.time_ns())), ref))
        except BaseException as exc:  # noqa: BLE001 - reported to the driver, which raises it
            self.q.put(("__error__", f"{type(exc).__name__}: {exc}"))
        self.q.put(INGEST_END)

    def next(self, max_items: int = 16, timeout_s: float = 0.2) -> list:
        """What is ready (waits up to timeout_s for the first item)."""
        try:
            items = [self.q.get(timeout=timeout_s)]
        except queue.Empty:
            return []
        while len(items) < max_items:
            try:
                items.append(self.q.get_nowait())
            except queue.Empty:
                break
        return items

    def late_frames(self) -> int:
        return self.late[0]

    def source_stats(self) -> dict:
        """The source's own statistics (e.g. the vehicle's pacing), where it keeps any."""
        stats = getattr(self.source, "stats", None)
        summary = getattr(stats, "summary", None)
        return summary() if callable(summary) else {}

    def stop(self) -> None:
        self._stop.set()


class BackboneActor:
    """Preprocessing + backbone + image segmentation of all cameras of a tick, in one call."""

    def __init__(self, model_factory: Callable[[], Any], torch_threads: int, seg_stride: int, store: Any) -> None:
        _set_threads(torch_threads)
        self.stage = BackboneStage(model_factory(), seg_stride)
        self.cameras = 0
        ray.get(store.note_start.remote("backbone"))

    def node_id(self) -> str:
        return _node_id()

    def pid(self) -> int:
        return os.getpid()

    def cpu_seconds(self) -> float:
        """CPU time of this actor's process so far (all threads): benchmarks difference it."""
        return time.process_time()

    def run(self, images: list, meta: TickMeta):
        """-> (packet, its timing): called with num_returns=2, so the driver can await the small
        second return to learn the stage is free, without fetching the features."""
        packet = self.stage.run(images, meta)
        self.cameras += len(images)
        return packet, packet.timing

    def warmup(self) -> FeaturePacket:
        return self.stage.warmup()

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

    def submit(self, frame_id: int, state: Any) -> None:
        try:
            self.q.get_nowait()  # an older checkpoint not started yet: the newer one supersedes it
        except queue.Empty:
            pass
        self.q.put((frame_id, state))

    def _run(self) -> None:
        while True:
            frame_id, state = self.q.get()
            self.store.save.remote(frame_id, self.stage.checkpoint(state))  # by value into the store actor


class BevActor:
    """BEV encoder + video module + heads; holds the temporal state, checkpointed every N ticks."""

    def __init__(self, model_factory: Callable[[], Any], torch_threads: int, store: Any, checkpoint_every: int) -> None:
        _set_threads(torch_threads)
        self.store = store
        self.every = checkpoint_every
        self.ticks = 0
        self.stage = BevStage(model_factory())
        self.checkpointer = _Checkpointer(self.stage, store)
        self.restored_from: int | None = None
        self.start_count = ray.get(store.note_start.remote("bev"))
        saved = ray.get(store.load.remote())
        if saved is not None:  # a restart: continue from the last checkpoint
            self.restored_from = saved[0]
            self.stage.restore(saved[1])

    def node_id(self) -> str:
        return _node_id()

    def pid(self) -> int:
        return os.getpid()

    def cpu_seconds(self) -> float:
        """CPU time of this actor's process so far (all threads): benchmarks difference it."""
        return time.process_time()

    def status(self) -> dict:
        return {"ticks": self.ticks, "starts": self.start_count, "restored_from": self.restored_from}

    def warmup(self, packet: FeaturePacket) -> None:
        if self.restored_from is None:  # never on a restart: the restored state must stay
            self.stage.warmup(packet)

    def run_cameras(self, meta: TickMeta, *cams: CameraFeatures):
        """A tick whose cameras were encoded one by one as they arrived (Ray resolved the refs)."""
        return self.run(packet_from_cameras(cams, meta.channels), meta)

    def run(self, packet: FeaturePacket, meta: TickMeta):
        result = self.stage.run(packet, meta)
        self.ticks += 1
        if self.every and self.ticks % self.every == 0:
            self.checkpointer.submit(meta.frame_id, self.stage.state)
        return result


class SinkActor:
    """Writes the run directory (see sink.py) from tick results passed by reference."""

    def __init__(self, out_dir: str, expected_samples: list[str] | None, max_boxes: int) -> None:
        from runtime.sink import ResultSink

        self.sink = ResultSink(out_dir, expected_samples=expected_samples, max_boxes=max_boxes)

    def node_id(self) -> str:
        return _node_id()

    def write(self, record, extra_timing=None) -> None:
        if extra_timing is not None:
            record = record.with_timing(extra_timing)
        self.sink.write(record)

    def close(self, summary: dict) -> dict:
        return self.sink.close(summary)
