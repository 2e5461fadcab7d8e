"""Per-stage latency against the budgets of runtime.yaml (`profile.budgets_ms`, `profile.deadline_ms`):
percentiles and deadline misses for each stage and end to end, and each tick's critical path.

End to end is, live, from the set's oldest camera exposure to the result in hand (the sensor clock is
the wall clock); for a replay it is the work latency (TickResult.latency_ms: the set's load plus
submission to result, without the time it waited for a free slot), as the runtime's summary reports it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

from runtime.config import TIMED_STAGES
from runtime.report import percentiles
from schema.results import DropRecord, TickResult

END_TO_END = "end_to_end"
CHAIN = ("ingest", "submit", "backbone", "bev", "deliver")  # a tick's stages in the order its work passes them


@dataclass(frozen=True)
class StageRow:
    """One row of the budget table: a stage's (or end to end's) latency and its misses."""

    stage: str
    n: int
    p50: float
    p90: float
    p99: float
    max: float
    budget_ms: float | None
    misses: int  # samples over budget (0 without a budget)

    @property
    def miss_percent(self) -> float:
        return 100.0 * self.misses / self.n if self.n else 0.0

    def to_json(self) -> dict:
        return {**asdict(self), "miss_percent": self.miss_percent}


def end_to_end_ms(r: TickResult, live: bool) -> float:
    return r.end_to_end_ms if live else r.latency_ms


def stage_samples(records: Iterable[TickResult | DropRecord], live: bool) -> dict[str, list[float]]:
    """Stage -> its durations in ms over the ticks (per-camera encodings: one per camera), plus end to end."""
    out: dict[str, list[float]] = {}
    for r in records:
        if not isinstance(r, TickResult):
            continue
        for t in r.timings:
            out.setdefault(t.stage, []).append(t.duration_ms)
        out.setdefault(END_TO_END, []).append(end_to_end_ms(r, live))
    return out


def budget_table(records: Iterable[TickResult | DropRecord], live: bool, budgets_ms: dict[str, float],
                 deadline_ms: float) -> list[StageRow]:
    """One row per stage the ticks passed (in pipeline order), then end to end against the deadline."""
    samples = stage_samples(records, live)
    order = [s for s in TIMED_STAGES if s in samples] + sorted(set(samples) - set(TIMED_STAGES) - {END_TO_END})
    rows = []
    for stage in order + ([END_TO_END] if END_TO_END in samples else []):
        values = samples[stage]
        p = percentiles(values)
        budget = deadline_ms if stage == END_TO_END else budgets_ms.get(stage)
        misses = sum(v > budget for v in values) if budget is not None else 0
        rows.append(StageRow(stage, p["n"], p["p50"], p["p90"], p["p99"], p["max"], budget, int(misses)))
    return rows


def format_budget_table(rows: Sequence[StageRow], live: bool) -> str:
    head = f"  {'stage':<16}{'n':>5}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}{'budget':>9}  misses"
    lines = [head]
    for r in rows:
        name = r.stage if r.stage != END_TO_END else ("end to end" if live else "latency")
        budget = f"{r.budget_ms:9.1f}" if r.budget_ms is not None else f"{'-':>9}"
        misses = f"{r.misses} ({r.miss_percent:.0f} %)" if r.budget_ms is not None else "-"
        lines.append(f"  {name:<16}{r.n:>5}{r.p50:9.1f}{r.p90:9.1f}{r.p99:9.1f}{r.max:9.1f}{budget}  {misses}")
    return "\n".join(lines) + "\n  (ms; a miss: a sample over its budget; per-camera encodings count per camera)"


def critical_path(r: TickResult, live: bool) -> dict[str, float]:
    """A tick's end-to-end time cut into consecutive pieces, in ms: each stage of CHAIN owns the part of its
    span not yet taken by a later stage, 'waiting' the gaps between them, 'before ingest' the rest (live:
    the exposures and the synchroniser's wait; replay: nothing). The pieces sum to the tick's wall time
    from its start (live: the oldest exposure; replay: its first stage) to its last stage's end."""
    by = {t.stage: t for t in r.timings}
    end = max(t.end_ns for t in r.timings)
    start = r.oldest_timestamp_us * 1000 if live else min(t.start_ns for t in r.timings)
    pieces = {s: 0.0 for s in CHAIN} | {"waiting": 0.0, "before ingest": 0.0}
    cursor = end
    for stage in reversed(CHAIN):
        t = by.get(stage)
        if t is None:
            continue
        s_start = max(t.start_ns, start)
        pieces["waiting"] += max(0, cursor - max(t.end_ns, s_start)) / 1e6
        pieces[stage] = max(0, min(t.end_ns, cursor) - s_start) / 1e6
        cursor = max(min(cursor, s_start), start)
    pieces["before ingest"] = max(0, cursor - start) / 1e6
    return pieces
