"""End-of-run report: ticks, drops by reason, per-stage and end-to-end latency percentiles."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from schema.results import DropRecord, TickResult

PERCENTILES = (50, 90, 99)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values, np.float64)
    out = {f"p{p}": float(np.percentile(a, p)) for p in PERCENTILES}
    out.update(mean=float(a.mean()), max=float(a.max()), n=int(len(a)))
    return out


class RunReport:
    """Accumulates records as they arrive; `summary()` is JSON-ready, `format()` is for people."""

    def __init__(self, live: bool, deadline_ms: float | None = None):
        self.live = live  # sensor timestamps are wall-clock: end-to-end latency is meaningful
        self.deadline_ms = deadline_ms
        self.ticks = 0
        self.degraded = 0
        self.drops: Counter[str] = Counter()
        self.stage_ms: dict[str, list[float]] = defaultdict(list)
        self.latency_ms: list[float] = []
        self.e2e_ms: list[float] = []
        # live, as Autoware and openpilot report them: from the set's first and last camera exposure to the
        # result in hand, the processing from the set's hand-over by the synchroniser, the rig's spread
        self.exposure_ms: dict[str, list[float]] = defaultdict(list)
        self.first_ns: int | None = None
        self.last_ns: int | None = None
        self.extra: dict = {}

    def add(self, record: TickResult | DropRecord) -> None:
        if isinstance(record, DropRecord):
            self.drops[record.reason] += 1
            return
        self.ticks += 1
        self.degraded += int(record.degraded)
        for t in record.timings:
            self.stage_ms[t.stage].append(t.duration_ms)
        self.latency_ms.append(record.latency_ms)
        if self.live:
            self.e2e_ms.append(record.end_to_end_ms)
            self._add_exposures(record)
        end = max(t.end_ns for t in record.timings) if record.timings else None
        start = min(t.start_ns for t in record.timings) if record.timings else None
        if start is not None:
            self.first_ns = start if self.first_ns is None else min(self.first_ns, start)
            self.last_ns = end if self.last_ns is None else max(self.last_ns, end)

    def _add_exposures(self, record: TickResult) -> None:
        by = {t.stage: t for t in record.timings}
        end = max(t.end_ns for t in record.timings)
        first = by["exposures"].start_ns if "exposures" in by else record.oldest_timestamp_us * 1000
        self.exposure_ms["since_first_exposure_ms"].append((end - first) / 1e6)
        if "exposures" in by:
            self.exposure_ms["since_last_exposure_ms"].append((end - by["exposures"].end_ns) / 1e6)
            self.exposure_ms["rig_spread_ms"].append(by["exposures"].duration_ms)
        if "ingest" in by:
            self.exposure_ms["processing_ms"].append((end - by["ingest"].start_ns) / 1e6)

    @property
    def total(self) -> int:
        return self.ticks + sum(self.drops.values())

    def summary(self) -> dict:
        span_s = (self.last_ns - self.first_ns) / 1e9 if self.first_ns is not None and self.last_ns > self.first_ns else 0.0
        out = {
            "frame_sets": self.total,
            "ticks": self.ticks,
            "degraded_ticks": self.degraded,
            "dropped": sum(self.drops.values()),
            "drops_by_reason": dict(self.drops),
            "throughput_hz": self.ticks / span_s if span_s > 0 else None,
            "latency_ms": percentiles(self.latency_ms),
            "stage_ms": {k: percentiles(v) for k, v in self.stage_ms.items()},
        }
        if self.live:
            out["end_to_end_ms"] = percentiles(self.e2e_ms)
            for name in ("since_first_exposure_ms", "since_last_exposure_ms", "processing_ms", "rig_spread_ms"):
                out[name] = percentiles(self.exposure_ms.get(name, []))
            out["drop_percent"] = 100.0 * out["dropped"] / self.total if self.total else 0.0
            if self.deadline_ms is not None:
                out["deadline_ms"] = self.deadline_ms
                out["deadline_misses"] = int(sum(v > self.deadline_ms for v in self.e2e_ms))
        out.update(self.extra)
        return out

    def format(self) -> str:
        s = self.summary()
        lines = [
            f"frame sets {s['frame_sets']}: ticks {s['ticks']} ({s['degraded_ticks']} degraded), dropped {s['dropped']}"
            + (f" {s['drops_by_reason']}" if s["dropped"] else ""),
        ]
        if s["throughput_hz"]:
            lines.append(f"throughput {s['throughput_hz']:.2f} ticks/s")

        def row(name: str, p: dict) -> str:
            return f"  {name:<14} p50 {p['p50']:8.1f}  p90 {p['p90']:8.1f}  p99 {p['p99']:8.1f}  max {p['max']:8.1f} ms"

        if s["latency_ms"]:
            lines.append("latency")
            lines.append(row("pipeline", s["latency_ms"]))
            for name in ("since_first_exposure_ms", "since_last_exposure_ms", "processing_ms", "rig_spread_ms"):
                if s.get(name):
                    lines.append(row(name[: -len("_ms")].replace("_", " "), s[name]))
            for stage, p in s["stage_ms"].items():
                if p:
                    lines.append(row(stage, p))
        if "deadline_misses" in s:
            lines.append(f"deadline misses (> {s['deadline_ms']:.1f} ms end to end): {s['deadline_misses']}")
        for k, v in self.extra.items():
            if isinstance(v, (int, float, str)):
                lines.append(f"{k}: {v}")
        return "\n".join(lines)
