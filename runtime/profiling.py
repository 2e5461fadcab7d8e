"""Per-stage timings of a run as a Chrome/Perfetto trace (open it at https://ui.perfetto.dev).

One track per stage; every tick is a slice on each stage it passed (named by frame id), drops are
instant events on a 'drops' track. For live sources a 'sensor->ingest' slice shows the time from
the oldest camera's exposure to the frame set's arrival, so the whole end-to-end latency is visible.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from schema.results import DropRecord, TickResult

STAGE_ORDER = ("sensor->ingest", "ingest", "submit", "backbone", "bev", "deliver", "exposures", "put")


def chrome_trace(records: Iterable[TickResult | DropRecord], live: bool = False) -> dict:
    """Records -> {"traceEvents": [...]} in the Trace Event Format (timestamps in microseconds)."""
    records = list(records)
    starts = [t.start_ns for r in records for t in r.timings]
    if live:
        starts += [r.oldest_timestamp_us * 1000 for r in records if isinstance(r, TickResult)]
    t0 = min(starts, default=0)
    tids: dict[str, int] = {name: i + 1 for i, name in enumerate(STAGE_ORDER)}
    events: list[dict] = []

    def tid(stage: str) -> int:
        if stage not in tids:
            tids[stage] = len(tids) + 1
        return tids[stage]

    for r in records:
        args = {"frame_id": r.frame_id, "scene": r.scene, "sample_token": r.sample_token}
        if isinstance(r, DropRecord):
            ts = (max((t.end_ns for t in r.timings), default=t0) - t0) / 1e3
            events.append({"name": f"drop {r.reason} #{r.frame_id}", "cat": "drop", "ph": "i", "s": "t",
                           "ts": ts, "pid": 1, "tid": tid("drops"), "args": {**args, "detail": r.detail}})
            continue
        if live and r.timings:
            ingest_end = next((t.end_ns for t in r.timings if t.stage == "ingest"), None)
            if ingest_end is not None:
                s = r.oldest_timestamp_us * 1000
                events.append({"name": f"#{r.frame_id}", "cat": "tick", "ph": "X", "ts": (s - t0) / 1e3,
                               "dur": max(ingest_end - s, 0) / 1e3, "pid": 1, "tid": tid("sensor->ingest"), "args": args})
        for t in r.timings:
            events.append({"name": f"#{r.frame_id}", "cat": "tick", "ph": "X", "ts": (t.start_ns - t0) / 1e3,
                           "dur": max(t.end_ns - t.start_ns, 0) / 1e3, "pid": 1, "tid": tid(t.stage),
                           "args": {**args, "degraded": r.degraded}})
    meta = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "bevstream"}}]
    meta += [{"name": "thread_name", "ph": "M", "pid": 1, "tid": i, "args": {"name": name}} for name, i in tids.items()]
    meta += [{"name": "thread_sort_index", "ph": "M", "pid": 1, "tid": i, "args": {"sort_index": i}} for i in tids.values()]
    return {"traceEvents": meta + events, "displayTimeUnit": "ms", "otherData": {"t0_ns": t0}}


def write_trace(path: str | Path, records: Iterable[TickResult | DropRecord], live: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(chrome_trace(records, live)))
    return path
