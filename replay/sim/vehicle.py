"""The live simulated vehicle: the simulated world's six cameras streamed in real time at 12 Hz.

It yields the same CameraFrame/FrameSet messages as log replay. Each camera fires at its rig offset
within the cycle (replay.sim.exposures.iter_captures); the frame carries that exact exposure timestamp and
the ego pose at it. A seeded bus model then decides per frame whether it is dropped, delivered late
(+late_ms) and its delivery jitter (|N(0, jitter_ms)|); frames are delivered in order of their due
time (so jitter and late frames reorder them) and, with realtime=True, not before it on the wall
clock. Rendering runs ahead in a background thread with a small bounded buffer; when it is slower
than real time, frames go out late and `arrival_ns` and the pacing statistics say so.

CPU: the world states of a cycle's six exposures are computed together as arrays
(World.light_states_at: no AgentState object per agent) and rendered from them; the images are
byte-identical to rendering World.state_at. About 30 ms of CPU per 12 Hz cycle at 352x198
(bench/sources.py --live-cpu-only).

With realtime=True the sensor timestamps are wall-clock microseconds (time.time_ns() // 1000 at
the stream start plus the schedule), so end-to-end latency can be measured from them.
"""
from __future__ import annotations

import heapq
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Iterator

import numpy as np

from schema.messages import CAMERA_CHANNELS, CameraFrame, FrameSet
from replay.sim.config import WorldConfig
from replay.sim.exposures import Capture, capture_times
from replay.sim.render import Renderer
from replay.sim.rig import camera_rig
from replay.sim.world import World
from replay.sync import SyncStats, make_synchronizer, synchronize

FIXED_START_US = 1_700_000_000_000_000  # sensor clock origin when not in real time (reproducible)
_CHUNK_S = 60.0  # unbounded streams are drawn from the world in chunks of this length


@dataclass
class LiveStats:
    """What the stream did: frames generated/dropped/late/delivered and how well it kept time."""

    generated: int = 0  # captures taken (one per camera per cycle)
    dropped: int = 0  # lost on the bus (never delivered)
    late: int = 0  # delivered late_ms after their due time by the bus model
    delivered: int = 0
    pacing_error_ms: list[float] = field(default_factory=list)  # actual - scheduled delivery, realtime only
    render_ms: list[float] = field(default_factory=list)
    dropped_by_channel: dict[str, int] = field(default_factory=lambda: {c: 0 for c in CAMERA_CHANNELS})

    @property
    def drop_ratio(self) -> float:
        return self.dropped / self.generated if self.generated else 0.0

    @property
    def pacing_median_ms(self) -> float:
        return float(np.median(self.pacing_error_ms)) if self.pacing_error_ms else float("nan")

    @property
    def pacing_p99_ms(self) -> float:
        return float(np.percentile(self.pacing_error_ms, 99)) if self.pacing_error_ms else float("nan")

    def summary(self) -> dict:
        return {"generated": self.generated, "dropped": self.dropped, "late": self.late,
                "delivered": self.delivered, "drop_ratio": self.drop_ratio,
                "pacing_median_ms": self.pacing_median_ms, "pacing_p99_ms": self.pacing_p99_ms,
                "render_median_ms": float(np.median(self.render_ms)) if self.render_ms else float("nan")}


@dataclass(order=True)
class _Pending:
    due_us: int
    seq: int
    frame: CameraFrame = field(compare=False)
    late: bool = field(compare=False, default=False)


@dataclass(frozen=True)
class BusDecision:
    drop: bool
    late: bool
    due_us: int  # when the frame is delivered, on the sensor clock


class BusModel:
    """Seeded per-frame fate on the camera bus: dropped, late (+late_ms), delivery jitter |N(0, jitter_ms)|.

    Three draws per frame in a fixed order, whatever happens to the frame, so the n-th frame's fate
    depends only on (seed, n): the same seed gives the same drops and lates on every run and pace.
    """

    def __init__(self, seed: int, jitter_ms: float = 2.0, late_prob: float = 0.0, late_ms: float = 60.0,
                 drop_prob: float = 0.0):
        for name, p in (("late_prob", late_prob), ("drop_prob", drop_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        if jitter_ms < 0 or late_ms < 0:
            raise ValueError(f"jitter_ms and late_ms must be >= 0, got {jitter_ms}, {late_ms}")
        self.jitter_ms, self.late_prob, self.late_ms, self.drop_prob = jitter_ms, late_prob, late_ms, drop_prob
        self._rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x11FE]))

    def decide(self, timestamp_us: int) -> BusDecision:
        drop = self._rng.random() < self.drop_prob
        late = self._rng.random() < self.late_prob
        jitter = abs(self._rng.normal())
        due = int(timestamp_us + jitter * self.jitter_ms * 1e3 + (self.late_ms * 1e3 if late else 0.0))
        return BusDecision(bool(drop), bool(late), due)


class SimulatedVehicle:
    """A live source: the simulated world rendered and delivered on the wall clock at 12 Hz."""

    is_live = True

    def __init__(
        self,
        seed: int = 0,
        width: int = 800,
        height: int = 450,
        rate_hz: float = 12.0,
        duration_s: float | None = None,
        jitter_ms: float = 2.0,
        late_prob: float = 0.0,
        late_ms: float = 60.0,
        drop_prob: float = 0.0,
        realtime: bool = True,
        scene_name: str | None = None,
        start_us: int | None = None,
        render_ahead: int = 6,
        preroll: bool = False,
        world_config: WorldConfig | None = None,
        world: World | None = None,
    ):
        """start_us: the sensor clock of the first cycle (default: the wall clock when the stream
        starts if realtime, else a fixed origin). render_ahead: frames rendered ahead of delivery
        (bounded buffer). preroll: fill that buffer before the clock starts (short demos on a slow
        machine); without it, frames rendered too slowly are simply delivered late. world: a prebuilt
        replay.sim.world.World to drive through instead of World(seed, world_config) (building one takes
        seconds); `seed` still seeds the bus model."""
        BusModel(seed, jitter_ms, late_prob, late_ms, drop_prob)  # validates the bus settings
        if rate_hz <= 0 or (duration_s is not None and duration_s <= 0):
            raise ValueError(f"need rate_hz > 0 and duration_s > 0 or None; got {rate_hz}, {duration_s}")
        self.seed = int(seed)
        self.width, self.height = int(width), int(height)
        self.rate_hz = float(rate_hz)
        self.period_us = int(round(1e6 / rate_hz))
        self.duration_s = duration_s
        self.jitter_ms, self.late_prob, self.late_ms, self.drop_prob = jitter_ms, late_prob, late_ms, drop_prob
        self.realtime = bool(realtime)
        self.scene_name = scene_name or f"live-seed{self.seed}"
        self.start_us = start_us
        self.render_ahead = max(int(render_ahead), 1)
        self.preroll = bool(preroll)
        self.world_config = world_config
        self.rig = camera_rig(self.width, self.height)
        self.channel_offsets_us = {c: int(self.rig[c].time_offset_us) for c in CAMERA_CHANNELS}
        self.stats = LiveStats()
        self.sync_stats: SyncStats | None = None
        self._world = world

    def bus_model(self) -> BusModel:
        """A fresh bus model with this vehicle's seed and settings (the fate of every frame)."""
        return BusModel(self.seed, self.jitter_ms, self.late_prob, self.late_ms, self.drop_prob)

    # -- the world and its captures -------------------------------------------------------------
    @property
    def world(self) -> World:
        """The simulated world (built on first use: it takes a moment)."""
        if self._world is None:
            self._world = World(self.seed, self.world_config)
        return self._world

    def _captures(self, start_us: int) -> Iterator[Capture]:
        """replay.sim.exposures captures of the whole drive (world time = (timestamp - start_us) s); an endless
        drive is laid out chunk by chunk on the same cycle grid. The states are World.light_states_at
        (agents as arrays: what the renderer needs, without an AgentState object per agent), computed
        a camera cycle's worth (six exposures) at a time."""
        if self.duration_s is not None:
            yield from self._states(capture_times(self.rig, start_us, self.duration_s, self.rate_hz), start_us, 0)
            return
        chunk_cycles = int(round(_CHUNK_S * self.rate_hz))
        k = 0
        while True:
            chunk_start = start_us + int(round(k * chunk_cycles * 1e6 / self.rate_hz))
            times = capture_times(self.rig, chunk_start, chunk_cycles / self.rate_hz, self.rate_hz)
            yield from self._states(times, start_us, k * chunk_cycles)
            k += 1

    def _states(self, times, start_us: int, cycle0: int) -> Iterator[Capture]:
        """Captures of (timestamp, cycle, channel) triples, their world states made len(rig) at a time."""
        step = len(self.rig)
        for i in range(0, len(times), step):
            batch = times[i:i + step]
            states = self.world.light_states_at([(ts - start_us) / 1e6 for ts, _, _ in batch])
            for (ts, cycle, ch), state in zip(batch, states):
                yield Capture(cycle + cycle0, ch, ts, state)

    def _make_renderer(self) -> Renderer:
        """The renderer, warmed up (the world's ground raster and first-call caches are built here,
        before the clock starts, not during the first frames)."""
        renderer = Renderer(self.world, self.width, self.height)
        renderer.render(self.world.light_state_at(0.0), self.rig[CAMERA_CHANNELS[0]])
        return renderer

    def _produce(self, start_us: int, renderer: Renderer, out: "queue.Queue", stop: threading.Event) -> None:
        """Background thread: bus model + rendering, in capture order; announces each timestamp."""
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            bus = self.bus_model()
            for seq, cap in enumerate(self._captures(start_us)):
                fate = bus.decide(cap.timestamp_us)
                self.stats.generated += 1
                if not put(("ts", cap.timestamp_us)):
                    return
                if fate.drop:
                    self.stats.dropped += 1
                    self.stats.dropped_by_channel[cap.channel] += 1
                    continue
                cam = self.rig[cap.channel]
                t0 = time.perf_counter()
                rgb, _labels = renderer.render(cap.state, cam)
                self.stats.render_ms.append((time.perf_counter() - t0) * 1e3)
                frame = CameraFrame(
                    channel=cap.channel,
                    frame_id=int(cap.cycle),
                    timestamp_us=int(cap.timestamp_us),
                    image=rgb,
                    intrinsic=cam.intrinsic,
                    sensor_to_ego=cam.sensor_to_ego,
                    ego_to_global=cap.state.ego_pose,
                    scene=self.scene_name,
                )
                if not put(("frame", _Pending(fate.due_us, seq, frame, fate.late))):
                    return
            put(("end", None))
        except BaseException as e:  # hand the failure to the consumer
            put(("error", e))

    # -- the source protocol ----------------------------------------------------------------------
    def camera_frames(self) -> Iterator[CameraFrame]:
        """Frames in arrival order with arrival_ns set; paced by the wall clock if realtime."""
        self.stats = LiveStats()
        renderer = self._make_renderer()  # world and renderer are built before the clock starts
        # The producer works in stream time from start_us; the consumer maps it onto the sensor
        # clock: + shift, where shift makes sensor time = wall-clock time in real time (unless start_us
        # was given). World time is unchanged by the shift: (timestamp - first cycle) stays the same.
        start_us = int(self.start_us) if self.start_us is not None else FIXED_START_US
        q: queue.Queue = queue.Queue(maxsize=2 * self.render_ahead)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(start_us, renderer, q, stop), daemon=True,
                                  name="bevstream-live-render")
        worker.start()
        heap: list[_Pending] = []
        bound = None  # no future frame can be due before this (the newest announced timestamp)
        done = False
        clock_started = False
        mono0 = shift = 0

        def take() -> None:
            nonlocal bound, done
            kind, value = q.get()
            if kind == "ts":
                bound = value
            elif kind == "frame":
                heapq.heappush(heap, value)
            elif kind == "end":
                done = True
            else:
                raise RuntimeError("the live vehicle's render thread failed") from value

        try:
            while self.preroll and not done and len(heap) < self.render_ahead:
                take()
            while True:
                while heap and (done or heap[0].due_us <= bound):
                    p = heapq.heappop(heap)
                    if self.realtime:
                        if not clock_started:  # the first cycle is due one period from now
                            mono0 = time.monotonic() + self.period_us * 1e-6
                            if self.start_us is None:
                                shift = time.time_ns() // 1000 + self.period_us - start_us
                            clock_started = True
                        scheduled = mono0 + (p.due_us - start_us) * 1e-6
                        delay = scheduled - time.monotonic()
                        if delay > 0:
                            time.sleep(delay)
                        self.stats.pacing_error_ms.append((time.monotonic() - scheduled) * 1e3)
                    self.stats.delivered += 1
                    self.stats.late += p.late
                    yield replace(p.frame, timestamp_us=p.frame.timestamp_us + shift, arrival_ns=time.time_ns())
                if done:
                    return
                take()
        finally:
            stop.set()
            worker.join(timeout=5.0)

    def frame_sets(self) -> Iterator[FrameSet]:
        """The frames synchronised by replay.sync (late frames counted in sync_stats, not delivered)."""
        sync = make_synchronizer(self)
        self.sync_stats = sync.stats
        yield from synchronize(self.camera_frames(), sync)

    def describe(self) -> str:
        dur = "endless" if self.duration_s is None else f"{self.duration_s:g} s"
        pace = "real time" if self.realtime else "as fast as possible"
        return (f"simulated vehicle seed {self.seed}, {self.width}x{self.height}, {self.rate_hz:g} Hz, {dur}, "
                f"{pace}; jitter {self.jitter_ms:g} ms, late {self.late_prob:.0%} (+{self.late_ms:g} ms), "
                f"drop {self.drop_prob:.0%}")
