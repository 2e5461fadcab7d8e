"""A simulated drive: the world's state at every camera exposure of the 12 Hz rig.

Each cycle starts at `start_us + cycle / rate_hz`; every camera fires at its own offset within the
cycle (`SensorCalibration.time_offset_us`, the real rig's), so the six images of one cycle show the
world at six slightly different times, as on the real car. World time is (timestamp - start_us) s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from replay.sim.rig import SensorCalibration
from replay.sim.world import World, WorldState


@dataclass(frozen=True)
class Capture:
    """One camera exposure: which cycle, which camera, when, and the world at that moment."""

    cycle: int
    channel: str
    timestamp_us: int
    state: WorldState


def capture_times(rig: dict[str, SensorCalibration], start_us: int, duration_s: float,
                  rate_hz: float = 12.0) -> list[tuple[int, int, str]]:
    """(timestamp_us, cycle, channel) of every exposure, sorted by timestamp (then rig order)."""
    if rate_hz <= 0 or duration_s < 0:
        raise ValueError(f"need rate_hz > 0 and duration_s >= 0, got rate_hz={rate_hz}, duration_s={duration_s}")
    n_cycles = int(round(duration_s * rate_hz))
    order = {ch: i for i, ch in enumerate(rig)}
    times = []
    for cycle in range(n_cycles):
        base = int(start_us) + int(round(cycle * 1e6 / rate_hz))
        for ch, cal in rig.items():
            times.append((base + int(cal.time_offset_us), cycle, ch))
    times.sort(key=lambda x: (x[0], order[x[2]]))
    return times


def iter_captures(world: World, rig: dict[str, SensorCalibration], start_us: int, duration_s: float,
                  rate_hz: float = 12.0) -> Iterator[Capture]:
    """Every camera exposure of `duration_s` seconds of driving, in timestamp order."""
    for ts, cycle, ch in capture_times(rig, start_us, duration_s, rate_hz):
        yield Capture(cycle, ch, ts, world.state_at((ts - int(start_us)) / 1e6))
