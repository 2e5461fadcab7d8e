"""Per-stage timings of a run as a Chrome/Perfetto trace (open it at https://ui.perfetto.dev).

Tracks are grouped by the process a stage runs in (the vehicle, the ingest actor or the driver's ingest
thread, the driver, the perception actor); each stage is a track of it, and per-camera encodings
('backbone_camera') get a track per camera. Every tick is a slice on each stage it passed (named by
frame id) and one flow (arrows in Perfetto) links its slices across processes in time order. A 'ticks'
process shows each tick's whole latency ('end to end'; live: from the oldest exposure) and, live,
'sensor->ingest'. Slices of one track never overlap: a slice that would overlap the previous one goes to
an overflow track ('deliver (2)'), so every track nests as the trace-event format requires. Drops are
instant events on the driver's 'drops' track. Timestamps are microseconds from the run's first event.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from schema.results import DropRecord, TickResult

Record = TickResult | DropRecord
STAGE_ORDER = ("end to end", "sensor->ingest", "exposures", "sync", "load", "put", "ingest", "submit",
               "backbone_camera", "decode", "backbone", "bev", "deliver", "drops")
PROCESS_ORDER = ("ticks", "vehicle", "ingest actor", "driver", "perception actor", "backbone actor", "bev actor")
DERIVED = ("end to end", "sensor->ingest")  # spans computed from a tick's timings, not recorded by a stage


@dataclass(frozen=True)
class TraceLayout:
    """Which process runs each stage (stage -> process name); the trace groups tracks by process."""

    processes: dict[str, str]

    def process_of(self, stage: str) -> str:
        return self.processes.get(stage, "driver")


def trace_layout(live: bool, ingest_actor: bool = True, fused: bool = True) -> TraceLayout:
    """The processes of a run: a live source in the ingest actor (or a driver thread), a replay's loading
    in the driver; backbone and BEV in one perception actor when fused (runtime/supervisor.stages_fused)."""
    ingest = "ingest actor" if live and ingest_actor else "driver"
    backbone, bev = ("perception actor",) * 2 if fused else ("backbone actor", "bev actor")
    return TraceLayout({"end to end": "ticks", "sensor->ingest": "ticks", "exposures": "vehicle", "sync": ingest,
                        "load": ingest, "put": ingest, "ingest": ingest, "submit": "driver", "deliver": "driver",
                        "drops": "driver", "backbone_camera": backbone, "decode": backbone, "backbone": backbone,
                        "bev": bev})


@dataclass
class _Span:
    stage: str  # the stage (its process); the track is `track`
    track: str  # the stage, or the camera channel of a per-camera encoding
    start_ns: int
    end_ns: int
    record: int  # index of its record: its flow
    args: dict = field(default_factory=dict)


def _tick_spans(i: int, r: TickResult, live: bool) -> list[_Span]:
    """A tick's recorded timings as spans, its per-camera encodings on a track per camera, plus the derived
    spans ('end to end'; live: 'sensor->ingest')."""
    spans = []
    n_cams = sum(t.stage == "backbone_camera" for t in r.timings)
    # packet_from_cameras keeps the per-camera timings in the set's camera order, that of seg_channels
    channels = iter(r.seg_channels if len(r.seg_channels) == n_cams else ("backbone_camera",) * n_cams)
    for t in r.timings:
        track = next(channels) if t.stage == "backbone_camera" else t.stage
        spans.append(_Span(t.stage, track, t.start_ns, t.end_ns, i))
    if r.timings:
        end = max(t.end_ns for t in r.timings)
        start = r.oldest_timestamp_us * 1000 if live else min(t.start_ns for t in r.timings)
        spans.append(_Span("end to end", "end to end", start, end, i))
        ingest_end = next((t.end_ns for t in r.timings if t.stage == "ingest"), None)
        if live and ingest_end is not None:
            spans.append(_Span("sensor->ingest", "sensor->ingest", start, ingest_end, i))
    return spans


def _assign_lanes(spans: list[_Span]) -> list[int]:
    """Greedy interval colouring per track: a span goes to the first lane of its track whose last span
    ended strictly before it starts (no two spans of a lane touch or overlap). -> lane per span."""
    lanes_end: dict[str, list[int]] = {}
    lane = [0] * len(spans)
    for k in sorted(range(len(spans)), key=lambda k: (spans[k].start_ns, spans[k].end_ns)):
        s = spans[k]
        ends = lanes_end.setdefault(s.track, [])
        free = next((j for j, e in enumerate(ends) if e < s.start_ns), None)
        if free is None:
            ends.append(s.end_ns)
            free = len(ends) - 1
        ends[free] = max(s.end_ns, s.start_ns)
        lane[k] = free
    return lane


class _Ids:
    """pid per process and tid per (process, track name), numbered in a stable display order."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}
        self.tids: dict[tuple[str, str], int] = {}

    def pid(self, process: str) -> int:
        return self.pids.setdefault(process, len(self.pids) + 1)

    def tid(self, process: str, track: str) -> int:
        self.pid(process)
        return self.tids.setdefault((process, track), len(self.tids) + 1)

    def metadata(self) -> list[dict]:
        pindex = {p: (PROCESS_ORDER.index(p) if p in PROCESS_ORDER else len(PROCESS_ORDER)) for p in self.pids}
        meta = []
        for p, pid in self.pids.items():
            meta.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": p}})
            meta.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": pindex[p]}})
        for (p, track), tid in sorted(self.tids.items(), key=lambda kv: kv[1]):
            base = track.split(" (")[0]
            order = STAGE_ORDER.index(base) if base in STAGE_ORDER else STAGE_ORDER.index("backbone_camera")
            meta.append({"name": "thread_name", "ph": "M", "pid": self.pids[p], "tid": tid, "args": {"name": track}})
            meta.append({"name": "thread_sort_index", "ph": "M", "pid": self.pids[p], "tid": tid,
                         "args": {"sort_index": 100 * order + tid}})
        return meta


def _flows(spans: list[_Span], where: list[tuple[int, int]], t0: int, names: dict[int, str]) -> list[dict]:
    """One flow per record through its recorded spans in order of start: 's' bound to the first slice, 't'
    to each next one, 'f' to the last ('bp': 'e': bound to the enclosing slice), each at its slice's start."""
    by_record: dict[int, list[int]] = {}
    for k, s in enumerate(spans):
        if s.stage not in DERIVED:
            by_record.setdefault(s.record, []).append(k)
    events = []
    for rec, ks in by_record.items():
        if len(ks) < 2:
            continue
        ks.sort(key=lambda k: (spans[k].start_ns, spans[k].end_ns))
        for n, k in enumerate(ks):
            ph = "s" if n == 0 else "f" if n == len(ks) - 1 else "t"
            pid, tid = where[k]
            events.append({"name": names[rec], "cat": "tick", "ph": ph, "id": rec + 1, "bp": "e",
                           "ts": (spans[k].start_ns - t0) / 1e3, "pid": pid, "tid": tid})
    return events


def chrome_trace(records: Iterable[Record], live: bool = False, layout: TraceLayout | None = None) -> dict:
    """Records -> {"traceEvents": [...]} in the Trace Event Format (timestamps in microseconds)."""
    records = list(records)
    layout = layout or trace_layout(live)
    spans: list[_Span] = []
    for i, r in enumerate(records):
        if isinstance(r, TickResult):
            spans += _tick_spans(i, r, live)
        else:
            spans += [_Span(t.stage, t.stage, t.start_ns, t.end_ns, i) for t in r.timings]
    t0 = min((s.start_ns for s in spans), default=0)
    ids, lanes = _Ids(), _assign_lanes(spans)
    where: list[tuple[int, int]] = []
    events: list[dict] = []
    for s, lane in zip(spans, lanes):
        process = layout.process_of(s.stage)
        track = s.track if lane == 0 else f"{s.track} ({lane + 1})"
        where.append((ids.pid(process), ids.tid(process, track)))
        r = records[s.record]
        events.append({"name": f"#{r.frame_id}", "cat": s.stage, "ph": "X", "ts": (s.start_ns - t0) / 1e3,
                       "dur": max(s.end_ns - s.start_ns, 0) / 1e3, "pid": where[-1][0], "tid": where[-1][1],
                       "args": {"frame_id": r.frame_id, "scene": r.scene, "sample_token": r.sample_token,
                                "stage": s.stage, "degraded": bool(r.missing)}})
    for r in records:
        if isinstance(r, DropRecord):
            ts = (max((t.end_ns for t in r.timings), default=t0) - t0) / 1e3
            process = layout.process_of("drops")
            events.append({"name": f"drop {r.reason} #{r.frame_id}", "cat": "drop", "ph": "i", "s": "t", "ts": ts,
                           "pid": ids.pid(process), "tid": ids.tid(process, "drops"),
                           "args": {"frame_id": r.frame_id, "scene": r.scene, "detail": r.detail}})
    names = {i: f"{'tick' if isinstance(r, TickResult) else 'drop'} #{r.frame_id}" for i, r in enumerate(records)}
    events += _flows(spans, where, t0, names)
    return {"traceEvents": ids.metadata() + events, "displayTimeUnit": "ms", "otherData": {"t0_ns": t0}}


def write_trace(path: str | Path, records: Iterable[Record], live: bool = False, layout: TraceLayout | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(chrome_trace(records, live, layout)))
    return path
