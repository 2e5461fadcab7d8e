"""The ingest actor of a live stream: the source's camera bus and synchroniser in their own process,
with the admission control of admission.py; the driver pulls staged frame sets from it."""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace
from typing import Any

import ray

from runtime.admission import LiveAdmission
from runtime.feeders import source_frame_sets
from runtime.handoff import INGEST_END, NO_IMAGE, Staged, drop_for
from schema.messages import StageTiming
from runtime.validate import check_frame_set


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


class IngestActor:
    """A live source's camera bus + synchroniser in its own process. Each frame set is checked, and
    the driver receives it without pixels plus references:
    - with a `backbone` actor (pipeline.live_encode: camera) and a source of raw camera frames, the
      cameras go to the backbone as they arrive (LiveAdmission), and the set carries the per-camera
      feature refs: when its last camera lands, only that camera's backbone + the BEV step remain;
    - otherwise its images are `ray.put` once here (the set goes through the backbone at once)."""

    def __init__(self, source: Any, sync_cfg: Any, min_cameras: int, backbone: Any = None,
                 max_in_flight: int = 2, live_queue: int = 1, bev: Any = None) -> None:
        self.source, self.sync_cfg, self.min_cameras = source, sync_cfg, min_cameras
        self.q: queue.Queue = queue.Queue()
        self.encoder = None
        if backbone is not None and hasattr(source, "camera_frames"):
            offsets = dict(getattr(source, "channel_offsets_us", None) or {})
            order = tuple(sorted(offsets, key=offsets.get)) if len(set(offsets.values())) > 1 else None
            self.encoder = LiveAdmission(backbone, self.q, cap=max_in_flight, queue=live_queue, firing_order=order,
                                         offsets_us=offsets, tolerance_us=int(sync_cfg.tolerance_ms * 1000), bev=bev)
        self.late = [0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bevstream-ingest", daemon=True)

    def node_id(self) -> str:
        return _node_id()
    def start(self) -> str:
        self._thread.start()
        return _node_id()

    def _run(self) -> None:
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
                        enc.refused(fs)
                    self.q.put(drop_for(fs.with_timing(StageTiming("ingest", start, time.time_ns())), *problem))
                    continue
                if enc is not None:  # admitted, dropped, or waiting for a slot (see LiveAdmission)
                    enc.emit(fs, start)
                    continue
                light = replace(fs, cameras=tuple(replace(c, image=NO_IMAGE) for c in fs.cameras))
                ref = ray.put([c.image for c in fs.cameras])  # the only copy of the pixels
                self.q.put(Staged(light.with_timing(StageTiming("ingest", start, time.time_ns())), ref))
        except BaseException as exc:  # noqa: BLE001 - reported to the driver, which raises it
            self.q.put(("__error__", f"{type(exc).__name__}: {exc}"))
            self.q.put(INGEST_END)
            return
        if enc is not None:
            enc.end()  # the end marker follows the last set still waiting for a slot
        else:
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

    def finished(self, frame_ids: list) -> None:
        """The driver's report: these frame sets' ticks ended (their admission slots are free)."""
        if self.encoder is not None:
            for frame_id in frame_ids:
                self.encoder.finished(frame_id)

    def block(self, reason: str | None, detail: str = "", seq: int | None = None) -> None:
        """The driver's report: an actor is restarting (reason 'actor_restart') or, with None, is back;
        `seq` orders the reports (LiveAdmission.block)."""
        if self.encoder is not None:
            self.encoder.block(reason, detail, seq)

    def admission_counts(self) -> dict:
        """Cycles admitted, made to wait, and dropped before encoding (live_encode camera)."""
        return dict(self.encoder.counts) if self.encoder is not None else {}

    def late_frames(self) -> int:
        return self.late[0]

    def source_stats(self) -> dict:
        """The source's own statistics (e.g. the vehicle's pacing), where it keeps any."""
        stats = getattr(self.source, "stats", None)
        summary = getattr(stats, "summary", None)
        return summary() if callable(summary) else {}

    def stop(self) -> None:
        self._stop.set()
