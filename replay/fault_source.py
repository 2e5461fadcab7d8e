"""A source with faults injected (`bevstream stream|replay --faults SPEC`): wraps any FrameSource.

The wrapper is itself a source of the same kind: a replay stays a replay (frame sets, `decode_for`,
`len`), a live source keeps its raw `camera_frames()` (the runtime synchronises them, in the ingest actor
or a driver thread, so the wrapper travels there with it). Its `stats.summary()` adds `faults` (what was
injected, when) to the source's own statistics, which the runtime writes to summary.json.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from replay.faults import Fault, FaultInjector, parse_faults
from schema.messages import CameraFrame, FrameSet


class _Stats:
    """The wrapped source's statistics plus the injection log."""

    def __init__(self, owner: "FaultySource"):
        self.owner = owner

    def summary(self) -> dict:
        inner = getattr(getattr(self.owner.source, "stats", None), "summary", None)
        out = dict(inner()) if callable(inner) else {}
        out["faults"] = self.owner.injector.summary()
        return out


class FaultySource:
    """A replay-like source with faults: its frame sets go through the FaultInjector."""

    def __init__(self, source: Any, faults: Iterable[Fault], seed: int = 0):
        self.source = source
        self.injector = FaultInjector(faults, seed, period_us=int(getattr(source, "period_us", 83_333)))
        self.stats = _Stats(self)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "source":  # (unpickling asks before `source` is set)
            raise AttributeError(name)
        return getattr(self.source, name)

    def __len__(self) -> int:
        return len(self.source)

    def decode_for(self, needed_size: Any, workers: int = 1, defer: bool = False) -> None:
        """The wrapped source's, always decoding here: the faults damage pixels (never deferred to the backbone)."""
        inner = getattr(self.source, "decode_for", None)  # a source without it decodes as it always does
        if inner is not None:
            inner(needed_size, workers=workers)

    @property
    def is_live(self) -> bool:
        return bool(getattr(self.source, "is_live", False))

    def frame_sets(self) -> Iterator[FrameSet]:
        return self.injector.frame_sets(self.source.frame_sets(), live=self.is_live)

    def describe(self) -> Any:
        inner = self.source.describe()
        spec = self.injector.summary()["spec"]
        if isinstance(inner, dict):
            return {**inner, "faults": spec, "fault_seed": self.injector.seed}
        return f"{inner}; faults {spec} (seed {self.injector.seed})"


class FaultyLiveSource(FaultySource):
    """A live source with raw camera frames: the faults act on the frames, before synchronisation."""

    def camera_frames(self) -> Iterator[CameraFrame]:
        return self.injector.camera_frames(self.source.camera_frames())


def with_faults(source: Any, spec: str | Iterable[Fault], seed: int = 0) -> FaultySource:
    """`source` with the faults of `spec` (a SPEC string or parsed faults; `kill` is left to the caller)."""
    faults = parse_faults(spec) if isinstance(spec, str) else tuple(spec)
    cls = FaultyLiveSource if hasattr(source, "camera_frames") else FaultySource
    return cls(source, faults, seed)
