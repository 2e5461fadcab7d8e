"""Fault injection for live streams and replays: `bevstream stream|replay --faults SPEC`.

SPEC is a comma-separated list of `NAME[:ARG][@START[-END]]`, times in seconds of stream time (sensor
time since the stream's first frame). The faults a real vehicle bus or a damaged log produce:

    dead:CAMERA@T            the camera stops for good at T
    missing:CAMERA@T1-T2     the camera sends nothing between T1 and T2
    late:P                   a frame arrives after the sync tolerance (probability P per frame)
    duplicate:P              a frame is delivered twice
    reorder:P                a frame (live) or a frame set (replay) swaps places with the next one
    jump:SECONDS@T           the sensor clock jumps by SECONDS at T (negative: backwards)
    corrupt:P                JPEG bytes overwritten (Pillow still decodes it, to garbage)
    truncated:P              the JPEG is cut short
    wrong_size:P             the image's size does not match its calibration
    nan_pose:P               a pose (the ego's or the camera's mount) is NaN
    kill:STAGE@T             `ray.kill` of the actor running STAGE (backbone, bev, perception); driven
                             by the CLI loop (KillSchedule), the rest by FaultInjector
    overload:FACTOR@T1-T2    the source delivers FACTOR (2 or 3) times as many camera cycles

A probability applies to every frame (live) or every camera of a set (replay); with @T1-T2 only there.
Corrupt and truncated images go through what a camera link does: JPEG-encode, damage the bytes, decode
with simplejpeg strict=True (the replay's decoder, replay/nuscenes/source.py), which raises on them: the
frame is lost (its camera counts as missing), never passed on as an image. Injection is seeded; every
injection is logged (`log`, summary.json's `faults`). Pure: no Ray, no runtime/, no perception/.
"""
from __future__ import annotations

import heapq
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator

import numpy as np
from pyquaternion import Quaternion

from replay.image_damage import damaged_jpeg, strict_decode, wrong_size
from schema.messages import CAMERA_CHANNELS, CameraFrame, FrameSet, Pose

PROBABILITY = ("late", "duplicate", "reorder", "corrupt", "truncated", "wrong_size", "nan_pose")
KILL_STAGES = ("backbone", "bev", "perception")
FAULT_NAMES = ("dead", "missing", "jump", "kill", "overload") + PROBABILITY
CYCLE_US = 83_333
LOG_LIMIT = 2000  # injections logged one by one; beyond, only counted


class FaultSpecError(ValueError):
    """A --faults SPEC that cannot be parsed: the message names the item and the problem."""


@dataclass(frozen=True)
class Fault:
    """One parsed SPEC item. `arg`: a camera, a stage, a probability, seconds or a factor."""

    name: str
    arg: Any = None
    start_s: float = 0.0
    end_s: float = float("inf")

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s

    def describe(self) -> str:
        window = "" if self.start_s == 0 and self.end_s == float("inf") else f"@{self.start_s:g}" + (
            "" if self.end_s == float("inf") else f"-{self.end_s:g}")
        return f"{self.name}{'' if self.arg is None else f':{self.arg}'}{window}"


def _number(text: str, what: str, item: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise FaultSpecError(f"fault {item!r}: {what} {text!r} is not a number") from None


def _window(text: str | None, item: str) -> tuple[float | None, float | None]:
    if text is None:
        return None, None
    head, sep, tail = text.lstrip("-").partition("-")  # a start may not be negative; "-" separates the end
    if text.startswith("-"):
        raise FaultSpecError(f"fault {item!r}: start time {text!r} is negative")
    start = _number(head, "start time", item)
    end = _number(tail, "end time", item) if sep else None
    if end is not None and end <= start:
        raise FaultSpecError(f"fault {item!r}: end time {end:g} is not after start time {start:g}")
    return start, end


def _parse_item(item: str) -> Fault:
    body, at, when = item.partition("@")
    name, colon, arg = body.partition(":")
    name = name.strip().lower()
    if name not in FAULT_NAMES:
        raise FaultSpecError(f"unknown fault {name!r} in {item!r}; expected one of {', '.join(FAULT_NAMES)}")
    start, end = _window(when if at else None, item)
    needs_start = name in ("dead", "missing", "jump", "kill", "overload")
    if needs_start and start is None:
        raise FaultSpecError(f"fault {item!r}: {name} needs a time, {name}:ARG@T" + ("1-T2" if name in ("missing", "overload") else ""))
    if name in ("missing", "overload") and end is None:
        raise FaultSpecError(f"fault {item!r}: {name} needs a window @T1-T2")
    if name in ("dead", "jump", "kill") and end is not None:
        raise FaultSpecError(f"fault {item!r}: {name} takes one time @T, not a window")
    if not colon or not arg:
        raise FaultSpecError(f"fault {item!r}: {name} needs an argument ({name}:ARG)")
    if name in ("dead", "missing"):
        value: Any = arg.upper()
        if value not in CAMERA_CHANNELS:
            raise FaultSpecError(f"fault {item!r}: unknown camera {arg!r}; expected one of {', '.join(CAMERA_CHANNELS)}")
    elif name == "kill":
        value = arg.lower()
        if value not in KILL_STAGES:
            raise FaultSpecError(f"fault {item!r}: unknown stage {arg!r}; expected one of {', '.join(KILL_STAGES)}")
    elif name == "jump":
        value = _number(arg, "jump", item)
        if value == 0:
            raise FaultSpecError(f"fault {item!r}: a jump of 0 s is no fault")
    elif name == "overload":
        value = _number(arg, "factor", item)
        if value not in (2.0, 3.0):  # beyond 3x a copied cycle falls within the sync tolerance of the next
            raise FaultSpecError(f"fault {item!r}: overload factor {value:g} must be 2 or 3")
        value = int(value)
    else:
        value = _number(arg, "probability", item)
        if not 0.0 <= value <= 1.0:
            raise FaultSpecError(f"fault {item!r}: probability {value:g} must be in [0, 1]")
    return Fault(name, value, start or 0.0, float("inf") if end is None else end)


def parse_faults(spec: str) -> tuple[Fault, ...]:
    """SPEC -> faults; raises FaultSpecError naming the first bad item."""
    items = [s.strip() for s in (spec or "").split(",")]
    if not any(items):
        raise FaultSpecError("empty fault spec; expected e.g. 'corrupt:0.05,dead:CAM_BACK@3'")
    if not all(items):
        raise FaultSpecError(f"empty item in fault spec {spec!r}")
    return tuple(_parse_item(s) for s in items)


NAN_POSE = Pose(np.full(3, np.nan), Quaternion(np.full(4, np.nan)))


# -- injection ----------------------------------------------------------------------------------
class FaultInjector:
    """Applies parsed faults (all but `kill`) to a stream of camera frames (live) or frame sets (replay),
    seeded; `log` lists every injection (fault, stream time, camera, frame), `counts` per fault."""

    def __init__(self, faults: Iterable[Fault], seed: int = 0, period_us: int = CYCLE_US):
        self.faults = tuple(f for f in faults if f.name != "kill")
        self.seed, self.period_us = int(seed), int(period_us)
        self.rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0xFA17]))
        self.t0_us: int | None = None
        self.log: list[dict] = []
        self.counts: dict[str, int] = {}
        self.next_frame_id = 0
        self.jumped: set[Fault] = set()
        self.entries: dict[int, list[dict]] = {}  # id(a set not yet delivered) -> its log entries

    # -- bookkeeping
    def t_s(self, timestamp_us: int) -> float:
        if self.t0_us is None:
            self.t0_us = int(timestamp_us)
        return (timestamp_us - self.t0_us) / 1e6

    def _note(self, fault: Fault, t_s: float, frame: Any = None, **detail: Any) -> None:
        self.counts[fault.name] = self.counts.get(fault.name, 0) + 1
        if len(self.log) < LOG_LIMIT:
            entry = {"fault": fault.describe(), "t_s": round(t_s, 3)}
            if frame is not None:
                entry.update(channel=frame.channel, timestamp_us=int(frame.timestamp_us), frame_id=int(frame.frame_id))
            entry.update(detail)
            self.log.append(entry)

    def _hit(self, name: str, t_s: float) -> Fault | None:
        """The first active fault `name` that fires now (probabilities drawn from the seeded stream)."""
        for f in self.faults:
            if f.name == name and f.active(t_s):
                if name not in PROBABILITY or self.rng.random() < f.arg:
                    return f
        return None

    def summary(self) -> dict:
        return {"spec": ",".join(f.describe() for f in self.faults), "seed": self.seed, "counts": dict(self.counts),
                "injected": list(self.log), "log_truncated": sum(self.counts.values()) > len(self.log)}

    # -- one camera frame
    def _jump_us(self, t_s: float, frame: Any = None) -> int:
        """The clock's offset at stream time t_s: the sum of the jumps passed (each logged once)."""
        passed = [f for f in self.faults if f.name == "jump" and t_s >= f.start_s]
        for f in passed:
            if f not in self.jumped:
                self.jumped.add(f)
                self._note(f, t_s, frame)
        return sum(int(f.arg * 1e6) for f in passed)

    def _shift(self, frame: CameraFrame, t_s: float) -> CameraFrame:
        shift_us = self._jump_us(t_s, frame)
        return replace(frame, timestamp_us=frame.timestamp_us + shift_us) if shift_us else frame

    def frame(self, frame: CameraFrame) -> list[CameraFrame]:
        """The frame after the per-frame faults: [] (lost), [frame] or [frame, frame] (duplicated).
        Its timestamp moved by any jump already passed (stream time is taken before the jump)."""
        t = self.t_s(frame.timestamp_us)
        for name in ("dead", "missing"):
            for f in self.faults:
                if f.name == name and f.arg == frame.channel and f.active(t):
                    self._note(f, t, frame)
                    return []
        frame = self._shift(frame, t)
        for name in ("corrupt", "truncated"):
            f = self._hit(name, t)
            if f is not None:
                return self._damaged(f, t, frame)
        f = self._hit("wrong_size", t)
        if f is not None:
            image = wrong_size(frame.image, self.rng)
            self._note(f, t, frame, shape=list(image.shape))
            frame = replace(frame, image=image)
        f = self._hit("nan_pose", t)
        if f is not None:
            which = "ego_to_global" if self.rng.random() < 0.5 else "sensor_to_ego"
            self._note(f, t, frame, pose=which)
            frame = replace(frame, **{which: NAN_POSE})
        f = self._hit("duplicate", t)
        if f is not None:
            self._note(f, t, frame)
            return [frame, frame]
        return [frame]

    def _damaged(self, f: Fault, t: float, frame: CameraFrame) -> list[CameraFrame]:
        data = damaged_jpeg(frame.image, f.name, self.rng)
        try:
            image = strict_decode(data)
        except ValueError as exc:  # what a camera link's strict decoder does: the frame is lost
            self._note(f, t, frame, outcome="rejected by the strict decoder", error=str(exc)[:80])
            return []
        self._note(f, t, frame, outcome="decoded")  # never seen with the stray marker; logged if it happens
        return [replace(frame, image=image)]

    # -- frame sets (replay, or any source that synchronises itself)
    def frame_sets(self, sets: Iterable[FrameSet], live: bool = False) -> Iterator[FrameSet]:
        """The sets after the faults, renumbered in delivery order (copies and swaps keep ids increasing).
        A lost or late camera leaves the set as missing; a live source's overload copies are paced."""
        held: FrameSet | None = None
        for fs in sets:
            t = self.t_s(fs.timestamp_us)
            n_logged = len(self.log)
            out = [self._set(fs, t)]
            self.entries[id(out[0])] = self.log[n_logged:]  # their frame_id becomes the delivered one
            factor = next((f.arg for f in self.faults if f.name == "overload" and f.active(t)), None)
            if factor is not None:
                n = factor - 1
                out += [self._copy(out[0], k, factor) for k in range(1, n + 1)]
                self._note(next(f for f in self.faults if f.name == "overload"), t, copies=n)
            for i, item in enumerate(out):
                if held is not None:
                    yield from self._numbered([item, held])
                    held = None
                    continue
                f = self._hit("reorder", t)
                if f is not None:
                    self._note(f, t, frame_id=item.frame_id, detail="delivered after the next set")
                    self.entries.setdefault(id(item), []).extend(self.log[-1:])
                    held = item
                    continue
                if i and live:
                    time.sleep(self.period_us / factor / 1e6)
                yield from self._numbered([item])
        if held is not None:
            yield from self._numbered([held])

    def _numbered(self, sets: list[FrameSet]) -> Iterator[FrameSet]:
        for fs in sets:
            for entry in self.entries.pop(id(fs), ()):
                entry["frame_id"] = self.next_frame_id
            cams = tuple(replace(c, frame_id=self.next_frame_id) for c in fs.cameras)
            yield replace(fs, frame_id=self.next_frame_id, cameras=cams)
            self.next_frame_id += 1

    def _copy(self, fs: FrameSet, k: int, factor: float) -> FrameSet:
        dt = int(k * self.period_us / factor)
        cams = tuple(replace(c, timestamp_us=c.timestamp_us + dt, sample_token=None, is_key_frame=False) for c in fs.cameras)
        return replace(fs, timestamp_us=fs.timestamp_us + dt, cameras=cams, sample_token=None, new_scene=False)

    def _set(self, fs: FrameSet, t: float) -> FrameSet:
        cams: list[CameraFrame] = []
        for cam in fs.cameras:
            f = self._hit("late", t)
            if f is not None:  # arrives after the set went: missing from it
                self._note(f, t, cam)
                continue
            cams.extend(self.frame(cam))
        present = {c.channel for c in cams}
        missing = tuple(ch for ch in CAMERA_CHANNELS if ch not in present)
        shift_us = self._jump_us(t)
        ego = fs.ego_to_global
        if any(c.ego_to_global is NAN_POSE for c in cams):  # the set's ego pose is its reference camera's
            ego = NAN_POSE
        return replace(fs, cameras=tuple(cams), missing=missing, timestamp_us=fs.timestamp_us + shift_us, ego_to_global=ego)

    # -- raw camera frames (live sources the runtime synchronises)
    def camera_frames(self, frames: Iterable[CameraFrame]) -> Iterator[CameraFrame]:
        """Frames in arrival order after the faults: late ones held back past the sync's wait, reordered
        ones swapped with the next, overload copies of each frame delivered at k/FACTOR of a cycle later."""
        late: list[tuple[int, CameraFrame]] = []  # (release after this sensor time, frame)
        swap: CameraFrame | None = None
        for frame in _with_copies(frames, self):
            t = self.t_s(frame.timestamp_us)
            ready: list[CameraFrame] = []
            f = self._hit("late", t)
            if f is not None:
                self._note(f, t, frame)
                late.append((frame.timestamp_us + 2 * self.period_us, frame))
            else:
                ready = self.frame(frame)
            due = [fr for ts, fr in late if ts <= frame.timestamp_us]
            late = [(ts, fr) for ts, fr in late if ts > frame.timestamp_us]
            for fr in due:
                ready.extend(self.frame(replace(fr, arrival_ns=time.time_ns() if fr.arrival_ns is not None else None)))
            for fr in ready:
                if swap is not None:
                    yield fr
                    yield swap
                    swap = None
                    continue
                g = self._hit("reorder", self.t_s(fr.timestamp_us))
                if g is not None:
                    self._note(g, t, fr)
                    swap = fr
                    continue
                yield fr
        if swap is not None:
            yield swap


def _with_copies(frames: Iterable[CameraFrame], inj: FaultInjector) -> Iterator[CameraFrame]:
    """The frames, plus, while an overload is active, FACTOR-1 copies of each (timestamps k/FACTOR of a
    cycle later), delivered when due on the wall clock: the source is read in a thread meanwhile."""
    if not any(f.name == "overload" for f in inj.faults):
        yield from frames
        return
    q: queue.Queue = queue.Queue(maxsize=64)
    stop = threading.Event()
    done = object()

    def read() -> None:
        try:
            for fr in frames:
                if stop.is_set():
                    return
                q.put(fr)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the consumer
            q.put(exc)
        q.put(done)

    threading.Thread(target=read, name="bevstream-fault-overload", daemon=True).start()
    pending: list[tuple[float, int, CameraFrame]] = []
    seq = 0
    try:
        while True:
            timeout = None if not pending else max(pending[0][0] - time.monotonic(), 0.0)
            try:
                item = q.get(timeout=timeout)
            except queue.Empty:
                _, _, copy = heapq.heappop(pending)
                yield replace(copy, arrival_ns=time.time_ns()) if copy.arrival_ns is not None else copy
                continue
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
            t = inj.t_s(item.timestamp_us)
            fault = next((f for f in inj.faults if f.name == "overload" and f.active(t)), None)
            if fault is not None:
                n = fault.arg - 1
                for k in range(1, n + 1):
                    dt_us = int(k * inj.period_us / fault.arg)
                    due = time.monotonic() + (dt_us / 1e6 if item.arrival_ns is not None else 0.0)
                    heapq.heappush(pending, (due, seq, replace(item, timestamp_us=item.timestamp_us + dt_us)))
                    seq += 1
                inj._note(fault, t, item, copies=n)
        for _, _, copy in sorted(pending):
            delay = _ - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield replace(copy, arrival_ns=time.time_ns()) if copy.arrival_ns is not None else copy
    finally:
        stop.set()


class KillSchedule:
    """The `kill` faults, for the loop that owns the Runtime: `due(timestamp_us)` -> stages to kill now
    (each once), stream time counted from the first timestamp it is given."""

    def __init__(self, faults: Iterable[Fault]):
        self.pending = sorted((f for f in faults if f.name == "kill"), key=lambda f: f.start_s)
        self.t0_us: int | None = None

    def due(self, timestamp_us: int) -> list[Fault]:
        if self.t0_us is None:
            self.t0_us = int(timestamp_us)
        t = (timestamp_us - self.t0_us) / 1e6
        now = [f for f in self.pending if f.start_s <= t]
        self.pending = [f for f in self.pending if f.start_s > t]
        return now
