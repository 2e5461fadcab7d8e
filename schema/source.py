"""The source protocol: what the runtime needs from anything that produces camera frames.

A replay (replay.nuscenes.source.NuScenesSource) yields synchronised FrameSets and blocks the
runtime when it is full: nothing is lost. A live source (replay.sim.vehicle.SimulatedVehicle) produces
frames on the wall clock whether or not the runtime keeps up, so the runtime drops under overload;
it also exposes its raw `camera_frames()` (arrival order, late or missing as on a real bus) and the
rig's firing offsets, so the runtime's ingest stage can synchronise them itself with
replay.sync.CameraSynchronizer.
"""
from __future__ import annotations

from typing import Iterator, Mapping, Protocol, runtime_checkable

from schema.messages import CameraFrame, FrameSet
from schema.results import DropRecord


@runtime_checkable
class FrameSource(Protocol):
    """Anything that yields synchronised frame sets in order."""

    is_live: bool  # True: drop the oldest work under overload; False: block and lose nothing

    def frame_sets(self) -> Iterator[FrameSet | DropRecord]:
        """Synchronised sets in stream order (frame_id strictly increasing); a set the source itself passes
        over (e.g. a real-time replay behind the log) comes as its DropRecord, so it is still accounted for."""
        ...

    def describe(self) -> str:
        """One line for logs and run summaries: what is streamed, from where, how fast."""
        ...


@runtime_checkable
class LiveFrameSource(FrameSource, Protocol):
    """A live source, whose frames the runtime may synchronise itself."""

    period_us: int  # the camera cycle (83333 at 12 Hz)
    channel_offsets_us: Mapping[str, int]  # each camera's firing offset within the cycle

    def camera_frames(self) -> Iterator[CameraFrame]:
        """Frames as they arrive (arrival_ns set): out of order, late or missing as on a real bus."""
        ...
