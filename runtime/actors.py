"""Ray actors: thin wrappers over the stages in stages.py (and the sink in sink.py).

Actors are plain classes here; supervisor.py turns them into Ray actors with the resources,
restarts and placement of runtime.yaml. They are synchronous actors (one call at a time, in
submission order), which is what keeps the BEV actor's temporal state in frame order.
"""
from __future__ import annotations

import os
from typing import Any, Callable

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

    def run(self, images: list, meta: TickMeta) -> FeaturePacket:
        return self.stage.run(images, meta)

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
