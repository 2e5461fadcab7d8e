"""The soak benchmark's measurements (bench/soak.py), apart from the run so they are tested on small inputs
(tests/bench/test_soak_measure.py): resident memory of a process tree sampled from /proc, growth between two
windows of ticks, p99 latency of two windows, and the frame-set accounting.

Memory is read from /proc (Linux): `VmRSS` of /proc/PID/status, the tree from each process's `PPid`. That is
what psutil reads; the project's environment does not ship psutil, and the bench needs nothing more.
"""
from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


def _status(pid: int) -> dict[str, str]:
    """The fields of /proc/PID/status ({} when the process is gone)."""
    try:
        text = (PROC / str(pid) / "status").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def rss_bytes(pid: int) -> int | None:
    """Resident set size of `pid` in bytes (None when it is gone or has no memory, e.g. a zombie)."""
    rss = _status(pid).get("VmRSS")
    return int(rss.split()[0]) * 1024 if rss else None


def descendants(root: int) -> list[int]:
    """Every process below `root` in the process tree (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            ppid = _status(int(entry.name)).get("PPid")
            if ppid is not None:
                children.setdefault(int(ppid), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return sorted(out)


def label(pid: int) -> str:
    """A short name for a process: Ray's worker title ('ray::PerceptionActor'), the script a Python
    process runs ('log_monitor.py'), or the executable's name ('raylet', 'gcs_server')."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        argv = []
    argv = [a for a in argv if a]
    if argv and argv[0].startswith("ray::"):
        return argv[0].split()[0].split(".")[0].rstrip("()")
    if argv and "python" in Path(argv[0]).name:
        script = next((a for a in argv[1:] if a.endswith(".py")), None)
        if script:
            return Path(script).name
        if "-m" in argv[1:-1]:
            return argv[argv.index("-m") + 1]
    return _status(pid).get("Name", "?").strip() or (Path(argv[0]).name if argv else "?")


@dataclass
class RssSample:
    tick: int  # ticks finished when the sample was taken
    wall_s: float  # seconds since the sampler started
    rss: dict[str, int]  # "label[pid]" -> bytes
    load1: float = 0.0  # the machine's 1-minute load average then (shared machine: it moves latency)

    @property
    def total(self) -> int:
        return sum(self.rss.values())


@dataclass
class RssSampler:
    """Samples the RSS of process `root` and all its descendants every `interval_s` in a thread; each sample is
    tagged with `progress()` (the ticks done). `names` gives some PIDs a better label (e.g. the actors')."""

    root: int = field(default_factory=os.getpid)
    interval_s: float = 2.0
    progress: object = None  # () -> int
    names: dict[int, str] = field(default_factory=dict)
    samples: list[RssSample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()
        self._lock = threading.Lock()
        self._labels: dict[int, str] = {}

    def sample(self) -> RssSample:
        """Take one sample now (also from the caller's thread: at the end of warm-up and of the run)."""
        pids = [self.root, *descendants(self.root)]
        rss = {}
        for pid in pids:
            n = rss_bytes(pid)
            if n is None:
                continue
            name = self.names.get(pid) or self._labels.get(pid)
            if name is None:
                name = "driver" if pid == self.root else label(pid)
                if name != "default_worker.py":  # a worker not yet titled 'ray::Actor': look again next time
                    self._labels[pid] = name  # a titled one's title changes with its call: keep the first
                    self._rename(f"default_worker.py[{pid}]", f"{name}[{pid}]")
            rss[f"{name}[{pid}]"] = n
        tick = int(self.progress()) if callable(self.progress) else 0
        s = RssSample(tick, time.monotonic() - self._t0, rss, os.getloadavg()[0])
        with self._lock:
            self.samples.append(s)
        return s

    def _rename(self, old: str, new: str) -> None:
        """The earlier samples of a process under the name it has now (one series per process)."""
        with self._lock:
            for s in self.samples:
                if old in s.rss:
                    s.rss[new] = s.rss.pop(old)

    def start(self) -> "RssSampler":
        def run() -> None:
            while not self._stop.wait(self.interval_s):
                self.sample()

        self.sample()
        self._thread = threading.Thread(target=run, name="soak-rss", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _window(samples: list[RssSample], lo: int, hi: int, first: bool) -> list[RssSample]:
    """The samples taken while ticks lo..hi-1 ran; if none, the one nearest that window's edge."""
    inside = [s for s in samples if lo <= s.tick <= hi]
    if inside:
        return inside
    if first:
        after = [s for s in samples if s.tick >= lo]
        return after[:1] or samples[-1:]
    before = [s for s in samples if s.tick <= hi]
    return before[-1:] or samples[:1]


def rss_growth(samples: list[RssSample], first: tuple[int, int], last: tuple[int, int]) -> dict:
    """Growth of resident memory between the tick windows `first` and `last` (lo, hi): (end - start) / start,
    each side the median of the samples in its window (robust to a frame set in flight at one instant).
    -> {"total": fraction, "max": the largest per-process fraction, "max_process": its name,
        "per_process": {name: {"start_mb", "end_mb", "growth"}}} over the processes alive in both windows."""
    a, b = _window(samples, *first, True), _window(samples, *last, False)
    if not a or not b:
        raise ValueError("no RSS samples to compare")
    per: dict[str, dict] = {}
    for name in sorted(set().union(*(s.rss for s in a)) & set().union(*(s.rss for s in b))):
        x = statistics.median(s.rss[name] for s in a if name in s.rss)
        y = statistics.median(s.rss[name] for s in b if name in s.rss)
        per[name] = {"start_mb": round(x / 2**20, 2), "end_mb": round(y / 2**20, 2), "growth": (y - x) / x}
    x, y = statistics.median(s.total for s in a), statistics.median(s.total for s in b)
    worst = max(per, key=lambda k: per[k]["growth"]) if per else None
    return {"total": (y - x) / x, "total_start_mb": round(x / 2**20, 1), "total_end_mb": round(y / 2**20, 1),
            "max": per[worst]["growth"] if worst else None, "max_process": worst, "per_process": per,
            "samples": [len(a), len(b)]}


def window_load(samples: list[RssSample], first: tuple[int, int], last: tuple[int, int]) -> dict:
    """Mean 1-minute load average over the samples of each window: was the machine as busy in both?"""
    a, b = _window(samples, *first, True), _window(samples, *last, False)
    return {"first": statistics.fmean(s.load1 for s in a), "last": statistics.fmean(s.load1 for s in b)}


def p99(xs: list[float]) -> float:
    """The 99th percentile (nearest rank on the sorted values), as bench/live.py reports it."""
    if not xs:
        raise ValueError("p99 of no values")
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.99 * (len(s) - 1))))]


def latency_windows(latencies_ms: list[float], warmup: int, window: int) -> dict:
    """p99 latency of ticks warmup..warmup+window-1 against the last `window` ticks (ratio last / first)."""
    if window < 1 or len(latencies_ms) < warmup + 2 * window:
        raise ValueError(f"{len(latencies_ms)} ticks do not hold a warm-up of {warmup} and two windows of {window}")
    first = latencies_ms[warmup:warmup + window]
    last = latencies_ms[-window:]
    a, b = p99(first), p99(last)
    return {"p99_first_ms": a, "p99_last_ms": b, "p99_ratio": b / a, "median_first_ms": statistics.median(first),
            "median_last_ms": statistics.median(last), "window_ticks": window,
            "first_window": [warmup, warmup + window], "last_window": [len(latencies_ms) - window, len(latencies_ms)]}


def accounting(frame_sets_in: int, ticks: int, drops: dict[str, int]) -> dict:
    """Every frame set that entered ends as a tick or a drop record: `unaccounted` = in - ticks - drops
    (0 when the runtime keeps its promise; negative would mean records without a frame set)."""
    dropped = sum(drops.values())
    return {"frame_sets_in": frame_sets_in, "ticks": ticks, "dropped": dropped, "drops_by_reason": dict(drops),
            "unaccounted": frame_sets_in - ticks - dropped}
