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

from runtime.stages import BackboneStage, BevStage, FeaturePacket, TickMeta


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


class IngestActor:
    """A live source's camera bus + synchroniser in its own process. Each frame set is checked, its
    images are `ray.put` once here, and the driver receives (frame set without pixels, images ref)."""

    def __init__(self, source: Any, sync_cfg: Any, min_cameras: int) -> None:
        self.source, self.sync_cfg, self.min_cameras = source, sync_cfg, min_cameras
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

        try:
            for fs in source_frame_sets(self.source, self.sync_cfg, self.late):
                if self._stop.is_set():
                    break
                start = time.time_ns()
                problem = check_frame_set(fs, self.min_cameras)
                if problem is not None:
                    self.q.put(drop_for(fs.with_timing(StageTiming("ingest", start, time.time_ns())), *problem))
                    continue
                ref = ray.put([c.image for c in fs.cameras])  # the only copy of the pixels
                light = replace(fs, cameras=tuple(replace(c, image=_NO_IMAGE) for c in fs.cameras))
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
        ray.get(store.note_start.remote("backbone"))

    def node_id(self) -> str:
        return _node_id()

    def pid(self) -> int:
        return os.getpid()

    def run(self, images: list, meta: TickMeta):
        """-> (packet, its timing): called with num_returns=2, so the driver can await the small
        second return to learn the stage is free, without fetching the features."""
        packet = self.stage.run(images, meta)
        return packet, packet.timing

    def warmup(self) -> FeaturePacket:
        return self.stage.warmup()


class BevActor:
    """BEV encoder + video module + heads; holds the temporal state, checkpointed every N ticks."""

    def __init__(self, model_factory: Callable[[], Any], torch_threads: int, store: Any, checkpoint_every: int) -> None:
        _set_threads(torch_threads)
        self.store = store
        self.every = checkpoint_every
        self.ticks = 0
        self.stage = BevStage(model_factory())
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

    def status(self) -> dict:
        return {"ticks": self.ticks, "starts": self.start_count, "restored_from": self.restored_from}

    def warmup(self, packet: FeaturePacket) -> None:
        if self.restored_from is None:  # never on a restart: the restored state must stay
            self.stage.warmup(packet)

    def run(self, packet: FeaturePacket, meta: TickMeta):
        result = self.stage.run(packet, meta)
        self.ticks += 1
        if self.every and self.ticks % self.every == 0:
            self.store.save.remote(meta.frame_id, self.stage.checkpoint())  # by value into the store actor
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
