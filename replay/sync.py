"""Camera synchronisation: group camera frames arriving on a bus into one FrameSet per 12 Hz cycle.

Pure Python (no Ray, no wall clock in the logic), so it is testable frame by frame.

Each camera fires at its own offset within the cycle (nuScenes: about 43 ms from CAM_FRONT_LEFT to
CAM_BACK_LEFT), so a frame's *cycle time* is its timestamp minus its channel's offset; frames of
one cycle then share a cycle time within jitter, while cycles are >= 50 ms apart. A frame joins the
open cycle whose cycle time is nearest, within `tolerance_us`. A cycle is emitted:
- as soon as all channels are present (and with it every older open cycle, degraded);
- or when its deadline passes: `now_us` >= the latest expected exposure among its *missing* channels
  + `max_wait_us`, where `now_us` is given by the caller (a live ingest passes its wall clock mapped
  onto the sensor clock, see `SensorClock`) or else the newest sensor timestamp seen (never waits
  forever). Each missing camera gets `max_wait_us` beyond its own exposure: a set missing only an
  early camera goes as soon as the later ones are in, not after the last camera's wait;
- or at `flush()` (end of stream) and at a scene change or time jump.
A frame whose cycle was already emitted comes back in `late`; a second frame of a channel in the
same cycle or a frame with a non-finite pose comes back in `rejected` with the reason. A new scene
name or a timestamp jump (forwards by more than `max_gap_s`, or backwards by more than that) starts
a new scene: the next set has `new_scene=True` and the pose history for kinematics is reset.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

from replay.kinematics import kinematics_at_last
from schema.messages import CAMERA_CHANNELS, CameraFrame, FrameSet, Pose, StageTiming, order_cameras
from schema.source import LiveFrameSource

CYCLE_US = 83_333  # the 12 Hz camera cycle


@dataclass
class SyncResult:
    """What one call produced: sets ready in order, frames that came too late, frames refused."""

    sets: list[FrameSet] = field(default_factory=list)
    late: list[CameraFrame] = field(default_factory=list)
    rejected: list[tuple[CameraFrame, str]] = field(default_factory=list)

    def extend(self, other: "SyncResult") -> "SyncResult":
        self.sets.extend(other.sets)
        self.late.extend(other.late)
        self.rejected.extend(other.rejected)
        return self


@dataclass
class SyncStats:
    frames_in: int = 0
    sets_out: int = 0
    complete: int = 0
    degraded: int = 0
    late: int = 0
    rejected: int = 0
    new_scenes: int = 0
    missing_by_channel: dict[str, int] = field(default_factory=dict)


@dataclass
class _Cycle:
    """An open cycle: frames so far and the mean cycle time of its frames."""

    anchor_us: float
    frames: dict[str, CameraFrame] = field(default_factory=dict)
    first_seen_ns: int = 0

    def add(self, frame: CameraFrame, cycle_time: float) -> None:
        n = len(self.frames)
        self.anchor_us = (self.anchor_us * n + cycle_time) / (n + 1)
        self.frames[frame.channel] = frame


class CameraSynchronizer:
    """Online grouping of camera frames (in arrival order) into synchronised FrameSets."""

    def __init__(
        self,
        channels: Sequence[str] = CAMERA_CHANNELS,
        period_us: int = CYCLE_US,
        tolerance_us: int | None = None,
        max_wait_us: int | None = None,
        offsets_us: Mapping[str, int] | None = None,
        max_gap_s: float = 1.0,
        first_frame_id: int = 0,
        history: int = 3,
    ):
        """
        channels: the cameras a complete set holds. period_us: the camera cycle.
        tolerance_us: how far a frame's cycle time may be from its cycle's (default period/4).
        max_wait_us: how long after each missing camera's expected exposure to wait for it
            (default period/2). offsets_us: each channel's firing offset within the cycle (default 0,
            a hardware-triggered rig); sources publish theirs as `channel_offsets_us`.
        max_gap_s: a forward or backward jump in cycle time larger than this starts a new scene.
        """
        unknown = [c for c in channels if c not in CAMERA_CHANNELS]
        if unknown or not channels:
            raise ValueError(f"unknown camera channels {unknown}; expected a subset of {CAMERA_CHANNELS}")
        if period_us <= 0:
            raise ValueError(f"period_us must be positive, got {period_us}")
        self.channels = tuple(channels)
        self.period_us = int(period_us)
        self.tolerance_us = int(period_us // 4 if tolerance_us is None else tolerance_us)
        self.max_wait_us = int(period_us // 2 if max_wait_us is None else max_wait_us)
        if not 0 < self.tolerance_us < self.period_us:
            raise ValueError(f"tolerance_us must be in (0, period_us={period_us}), got {self.tolerance_us}")
        if self.max_wait_us < 0:
            raise ValueError(f"max_wait_us must be >= 0, got {self.max_wait_us}")
        offsets = dict(offsets_us or {})
        bad = [c for c in offsets if c not in CAMERA_CHANNELS]
        if bad:
            raise ValueError(f"offsets_us has unknown channels {bad}")
        self.offsets_us = {c: int(offsets.get(c, 0)) for c in CAMERA_CHANNELS}
        self._last_offset = max(self.offsets_us[c] for c in self.channels)
        self.max_gap_us = int(max_gap_s * 1e6)
        self.history = max(int(history), 1)
        self.stats = SyncStats()
        self._next_id = int(first_frame_id)
        self._scene: str | None = None
        self._past_scenes: set[str] = set()
        self._reset_scene_state()

    # -- state --------------------------------------------------------------------------------
    def _reset_scene_state(self) -> None:
        self._open: list[_Cycle] = []  # sorted by anchor
        self._emitted: deque[float] = deque(maxlen=64)  # anchors of recently emitted cycles
        self._poses: deque[tuple[int, Pose]] = deque(maxlen=self.history)
        self._newest_ts: int | None = None
        self._newest_ct: float | None = None
        self._pending_new_scene = True

    def _start_scene(self, scene: str | None) -> SyncResult:
        out = self.flush()
        if self._scene is not None and scene != self._scene:
            self._past_scenes.add(self._scene)
        self._scene = scene
        self._reset_scene_state()
        return out

    # -- public API ---------------------------------------------------------------------------
    def feed(self, frame: CameraFrame, now_us: int | None = None) -> SyncResult:
        """Add one frame (arrival order); return the sets now ready, late and rejected frames."""
        self.stats.frames_in += 1
        out = SyncResult()
        if frame.channel not in self.channels:
            return self._reject(out, frame, f"channel {frame.channel} is not synchronised here")
        if not (frame.ego_to_global.is_finite() and frame.sensor_to_ego.is_finite()):
            return self._reject(out, frame, "non-finite pose")
        if frame.scene != self._scene:
            if frame.scene in self._past_scenes:
                return self._late(out, frame)  # a straggler of a scene already finished
            out.extend(self._start_scene(frame.scene))
        ct = frame.timestamp_us - self.offsets_us[frame.channel]
        ref = self._newest_ct if self._newest_ct is not None else (self._emitted[-1] if self._emitted else None)
        if ref is not None and (ct > ref + self.max_gap_us or ct < ref - self.max_gap_us):
            out.extend(self._start_scene(frame.scene))  # time jumped: same scene name, fresh state

        cycle = self._nearest_open(ct)
        if cycle is None:
            if self._matches_emitted(ct) or (self._emitted and ct < self._emitted[-1]):
                return self._late(out, frame)
            cycle = _Cycle(anchor_us=float(ct), first_seen_ns=time.time_ns())
            self._open.append(cycle)
        elif frame.channel in cycle.frames:
            return self._reject(out, frame, f"duplicate {frame.channel} in one cycle")
        cycle.add(frame, ct)
        self._open.sort(key=lambda c: c.anchor_us)
        self._newest_ts = frame.timestamp_us if self._newest_ts is None else max(self._newest_ts, frame.timestamp_us)
        self._newest_ct = ct if self._newest_ct is None else max(self._newest_ct, ct)

        if len(cycle.frames) == len(self.channels):
            while self._open and self._open[0] is not cycle:
                out.sets.append(self._emit(self._open.pop(0)))
            out.sets.append(self._emit(self._open.pop(0)))
        return out.extend(self.poll(now_us))

    def poll(self, now_us: int | None = None) -> SyncResult:
        """Emit the cycles whose deadline has passed at `now_us` (default: newest timestamp seen)."""
        out = SyncResult()
        now = self._newest_ts if now_us is None else now_us
        if now is None:
            return out
        while self._open and self._deadline_us(self._open[0]) <= now:
            out.sets.append(self._emit(self._open.pop(0)))
        return out

    def next_deadline_us(self) -> float | None:
        """Sensor time at which the oldest open cycle will be emitted without more frames (None: none open)."""
        return self._deadline_us(self._open[0]) if self._open else None

    def flush(self) -> SyncResult:
        """Emit every open cycle (end of stream)."""
        out = SyncResult()
        while self._open:
            out.sets.append(self._emit(self._open.pop(0)))
        return out

    # -- internals ----------------------------------------------------------------------------
    def _deadline_us(self, cycle: _Cycle) -> float:
        """The latest expected exposure among the cycle's missing channels + max_wait."""
        last = max((self.offsets_us[c] for c in self.channels if c not in cycle.frames), default=self._last_offset)
        return cycle.anchor_us + last + self.max_wait_us

    def _nearest_open(self, ct: float) -> _Cycle | None:
        best = min(self._open, key=lambda c: abs(c.anchor_us - ct), default=None)
        if best is None or abs(best.anchor_us - ct) > self.tolerance_us:
            return None
        return best

    def _matches_emitted(self, ct: float) -> bool:
        return any(abs(a - ct) <= self.tolerance_us for a in self._emitted)

    def _late(self, out: SyncResult, frame: CameraFrame) -> SyncResult:
        self.stats.late += 1
        out.late.append(frame)
        return out

    def _reject(self, out: SyncResult, frame: CameraFrame, reason: str) -> SyncResult:
        self.stats.rejected += 1
        out.rejected.append((frame, reason))
        return out

    def _emit(self, cycle: _Cycle) -> FrameSet:
        cams = order_cameras(list(cycle.frames.values()))
        missing = tuple(c for c in self.channels if c not in cycle.frames)
        ref = min(cams, key=lambda c: c.timestamp_us)  # reference camera: the earliest exposure
        if not self._poses or ref.timestamp_us > self._poses[-1][0]:
            self._poses.append((ref.timestamp_us, ref.ego_to_global))
        kin = kinematics_at_last([t for t, _ in self._poses], [p for _, p in self._poses])
        sample_token = next((c.sample_token for c in cams if c.is_key_frame and c.sample_token), None)
        arrivals = [c.arrival_ns for c in cams if c.arrival_ns is not None]
        start_ns = min(arrivals) if arrivals else cycle.first_seen_ns
        fs = FrameSet(
            frame_id=self._next_id,
            scene=self._scene or "",
            timestamp_us=ref.timestamp_us,
            cameras=cams,
            missing=missing,
            ego_to_global=ref.ego_to_global,
            kinematics=kin,
            sample_token=sample_token,
            new_scene=self._pending_new_scene,
            timings=(StageTiming("sync", start_ns, max(time.time_ns(), start_ns)),),
        )
        self._next_id += 1
        self._emitted.append(cycle.anchor_us)
        if self._pending_new_scene:
            self.stats.new_scenes += 1
        self._pending_new_scene = False
        self.stats.sets_out += 1
        if missing:
            self.stats.degraded += 1
            for c in missing:
                self.stats.missing_by_channel[c] = self.stats.missing_by_channel.get(c, 0) + 1
        else:
            self.stats.complete += 1
        return fs


class SensorClock:
    """Maps the wall clock onto a live source's sensor clock, so cycle deadlines pass on time even when
    no further frame arrives (a dropped last camera would otherwise wait for the next cycle's first frame).

    The offset is the smallest (arrival - timestamp) seen: a frame cannot arrive before its exposure,
    so this is the bus's best-case delay. Frames without `arrival_ns` leave the clock unknown."""

    def __init__(self, max_jump_us: int = 1_000_000) -> None:
        self.offset_us: float | None = None
        self.max_jump_us = max_jump_us  # a lag this far off the offset: the sensor clock itself jumped

    def observe(self, frame: CameraFrame) -> None:
        if frame.arrival_ns is None:
            return
        lag = frame.arrival_ns / 1e3 - frame.timestamp_us
        if self.offset_us is None or abs(lag - self.offset_us) > self.max_jump_us:
            # first frame, or the sensor clock jumped (backwards, the smallest lag seen would keep the old
            # offset: the mapped clock would run seconds ahead and every cycle would go out at once, degraded)
            self.offset_us = lag
        else:
            self.offset_us = min(self.offset_us, lag)

    def now_us(self, wall_ns: int | None = None) -> float | None:
        """The sensor time now (None until a frame with an arrival time was seen)."""
        if self.offset_us is None:
            return None
        return (time.time_ns() if wall_ns is None else wall_ns) / 1e3 - self.offset_us

    def seconds_until(self, sensor_us: float | None, cap_s: float = 0.2) -> float:
        """Wall seconds until `sensor_us` (>= 0, at most cap_s; cap_s when unknown)."""
        now = self.now_us()
        if sensor_us is None or now is None:
            return cap_s
        return min(max((sensor_us - now) / 1e6, 0.0), cap_s)


def synchronize(frames: Iterable[CameraFrame], sync: CameraSynchronizer) -> Iterator[FrameSet]:
    """Frame sets from a stream of frames in arrival order; late/rejected frames are counted in
    `sync.stats` and otherwise dropped (use `feed` directly to write drop records for them)."""
    for frame in frames:
        yield from sync.feed(frame).sets
    yield from sync.flush().sets


def cluster_cycles(
    items: Sequence[tuple[str, int]],
    offsets_us: Mapping[str, int] | None = None,
    tolerance_us: int = CYCLE_US // 4,
) -> list[list[int]]:
    """Offline grouping of (channel, timestamp_us) items into cycles; returns lists of item indices,
    in cycle-time order, at most one item per channel per cycle (used by log replay)."""
    offsets = dict(offsets_us or {})
    ct = [ts - offsets.get(ch, 0) for ch, ts in items]
    order = sorted(range(len(items)), key=lambda i: ct[i])
    groups: list[list[int]] = []
    start = 0.0
    for i in order:
        ch = items[i][0]
        if groups and ct[i] - start <= tolerance_us and all(items[j][0] != ch for j in groups[-1]):
            groups[-1].append(i)
        else:
            groups.append([i])
            start = ct[i]
    return groups


def make_synchronizer(source: LiveFrameSource, **overrides):
    """A CameraSynchronizer configured for a live source's rig (period, firing offsets)."""
    kwargs = dict(period_us=source.period_us, offsets_us=dict(source.channel_offsets_us))
    kwargs.update(overrides)
    return CameraSynchronizer(**kwargs)
