"""The Perfetto trace: well formed by the trace-event format (checked by trace_format.py, written from the
specification), per-camera tracks, flows through a tick's slices across processes, overlap-free tracks."""
from __future__ import annotations

import random

import numpy as np
import pytest
from pyquaternion import Quaternion

from runtime.profiling import chrome_trace
from runtime.profiling.trace import trace_layout
from schema.messages import CAMERA_CHANNELS, Pose, StageTiming
from schema.results import DetectionArrays, DropRecord, TickResult
from tests.runtime.profiling.trace_format import check_trace

MS = 1_000_000


def tick(frame_id: int, t0: int, stages: list[tuple[str, float, float]], cams: tuple[str, ...] = ()) -> TickResult:
    """A tick whose timings are (stage, start ms, end ms) after t0 (ns); its exposure 40 ms before t0."""
    empty = DetectionArrays("ego", np.zeros((0, 9)), [], [], [])
    timings = tuple(StageTiming(s, t0 + int(a * MS), t0 + int(b * MS)) for s, a, b in stages)
    return TickResult((t0 - 40 * MS) // 1000, Pose.identity(), empty, empty, (), (), cams,
                      np.zeros((len(cams), 2, 2), np.uint8), (), False, frame_id=frame_id, scene="scene-x",
                      timestamp_us=(t0 - 40 * MS) // 1000, timings=timings)


def live_ticks(n: int = 4, period_ms: float = 70.0) -> list:
    """Live-like ticks, two in flight: the per-camera encodings of tick k+1 run while tick k's BEV step does,
    and their 'deliver' and 'end to end' slices overlap; one drop."""
    recs = []
    for k in range(n):
        t0 = 10_000 * MS + int(k * period_ms * MS)
        stages = [("exposures", -40, 0), ("sync", 0, 2), ("ingest", 2, 3), ("submit", 3, 3.2)]
        stages += [("backbone_camera", 3.5, 20)] * 3 + [("backbone_camera", 21, 30)] * 3
        stages += [("backbone", 21, 30), ("bev", 30, 95), ("deliver", 95, 180)]
        recs.append(tick(k, t0, stages, CAMERA_CHANNELS))
    recs.append(DropRecord("overload", "full", frame_id=n, scene="scene-x", timestamp_us=0,
                           timings=(StageTiming("sync", 10_000 * MS, 10_002 * MS),)))
    return recs


def test_a_live_trace_is_well_formed_with_a_track_per_camera_and_flows_across_processes():
    trace = chrome_trace(live_ticks(), live=True)
    assert check_trace(trace) == []
    events = trace["traceEvents"]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    assert set(CAMERA_CHANNELS) <= set(threads.values())
    assert {"deliver (2)", "end to end (2)"} <= set(threads.values())  # overlapping ticks: an overflow track
    flow = [e for e in events if e["ph"] in "stf" and e["id"] == 1]
    assert [e["ph"] for e in flow][0] == "s" and flow[-1]["ph"] == "f" and len(flow) == 13  # its 13 recorded timings
    assert {processes[e["pid"]] for e in flow} == {"vehicle", "ingest actor", "driver", "perception actor"}
    assert [e["ts"] for e in flow] == sorted(e["ts"] for e in flow)
    bev = next(e for e in events if e["ph"] == "X" and e["cat"] == "bev" and e["args"]["frame_id"] == 0)
    assert bev["dur"] == pytest.approx(65_000.0)  # microseconds
    assert any(e["ph"] == "i" and "overload" in e["name"] for e in events)


def test_the_layout_puts_stages_in_their_processes():
    trace = chrome_trace(live_ticks(2), live=False, layout=trace_layout(live=False, fused=False))
    events = trace["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    of = {e["cat"]: processes[e["pid"]] for e in events if e["ph"] == "X"}
    assert of["bev"] == "bev actor" and of["backbone"] == "backbone actor" and of["ingest"] == "driver"
    assert "sensor->ingest" not in of  # a replay has no wall-clock sensor time


@pytest.mark.parametrize("seed", range(5))
def test_random_overlapping_ticks_still_give_a_well_formed_trace(seed):
    """Property: whatever the timings (overlaps, zero durations, touching slices), the trace is well formed."""
    rng = random.Random(seed)
    recs = []
    for k in range(40):
        t0 = 1_000 * MS + rng.randrange(0, 400) * MS
        stages, t = [], 0.0
        for s in ("sync", "ingest", "submit", "backbone", "bev", "deliver"):
            d = rng.choice([0.0, 0.5, rng.uniform(0, 90)])
            stages.append((s, t, t + d))
            t += d if rng.random() < 0.7 else -rng.uniform(0, d)  # sometimes the next stage starts inside this one
        recs.append(tick(k, t0, stages))
    trace = chrome_trace(recs, live=bool(seed % 2))
    assert check_trace(trace) == []


def _with(trace: dict, extra: list[dict]) -> dict:
    return {"traceEvents": trace["traceEvents"] + extra}


def test_the_checker_finds_partial_overlaps_bad_flows_and_bad_fields():
    """The checker can fail: each broken trace is reported."""
    good = chrome_trace(live_ticks(2), live=True)
    x = next(e for e in good["traceEvents"] if e["ph"] == "X" and e["cat"] == "bev")
    overlap = dict(x, ts=x["ts"] + x["dur"] / 2)
    assert any("partially overlaps" in p for p in check_trace(_with(good, [overlap])))
    dangling = {"name": "t", "cat": "tick", "ph": "s", "id": 999, "ts": x["ts"], "pid": x["pid"], "tid": x["tid"]}
    assert any("flow" in p for p in check_trace(_with(good, [dangling])))
    unbound = dict(next(e for e in good["traceEvents"] if e["ph"] == "f"), ts=1e12)
    assert any("inside no slice" in p for p in check_trace({"traceEvents": [
        e for e in good["traceEvents"] if e["ph"] != "f" or e["id"] != unbound["id"]] + [unbound]}))
    assert check_trace(_with(good, [dict(x, ts=str(x["ts"]))]))
    assert check_trace(_with(good, [dict(x, pid=1.5)]))
    assert check_trace(_with(good, [dict(x, ph="B")]))


def test_a_replays_decode_runs_where_the_backbone_runs():
    """pipeline.replay_decode: backbone decodes a set's JPEGs in the backbone stage: its slices sit with the backbone."""
    assert trace_layout(live=False).process_of("decode") == "perception actor" == trace_layout(live=False).process_of("backbone")
    assert trace_layout(live=False, fused=False).process_of("decode") == "backbone actor"
