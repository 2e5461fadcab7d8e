"""A checker of the Trace Event Format as Chrome and Perfetto read it (the subset our traces use), written
from the format's specification, independently of runtime/profiling/trace.py: -> a list of problems."""
from __future__ import annotations

import math
from collections import defaultdict

PHASES = {"X", "i", "M", "s", "t", "f"}  # complete slices, instants, metadata, flow start / step / finish


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def _fields(e: dict) -> list[str]:
    problems = []
    if e.get("ph") not in PHASES:
        problems.append(f"phase {e.get('ph')!r} not one of {sorted(PHASES)}: {e}")
    if not _is_int(e.get("pid")) or not _is_int(e.get("tid")):
        problems.append(f"pid/tid not integers: {e}")
    if e.get("ph") != "M" and (not _is_number(e.get("ts")) or e["ts"] < 0):
        problems.append(f"ts not a non-negative number of microseconds: {e}")
    if e.get("ph") == "X" and (not _is_number(e.get("dur")) or e["dur"] < 0):
        problems.append(f"complete event without a non-negative dur: {e}")
    if e.get("ph") in ("s", "t", "f") and ("id" not in e or "cat" not in e or "name" not in e):
        problems.append(f"flow event without id/cat/name: {e}")
    return problems


def _nesting(slices: dict[tuple[int, int], list[dict]]) -> list[str]:
    """On one track, two complete slices are disjoint or one contains the other (no partial overlap)."""
    problems = []
    for track, evs in slices.items():
        stack: list[tuple[float, float]] = []
        for e in sorted(evs, key=lambda e: (e["ts"], -e["dur"])):
            start, end = e["ts"], e["ts"] + e["dur"]
            while stack and stack[-1][1] <= start:
                stack.pop()
            if stack and end > stack[-1][1]:
                problems.append(f"track {track}: slice [{start}, {end}] partially overlaps [{stack[-1][0]}, {stack[-1][1]}]")
            stack.append((start, end))
    return problems


def _flows(flows: dict, slices: dict[tuple[int, int], list[dict]]) -> list[str]:
    """Each flow id: one 's', then any 't', one 'f' (bp 'e'), in non-decreasing time, each point inside a slice
    of its own track (where Perfetto binds it)."""
    problems = []
    for fid, evs in flows.items():
        phases = [e["ph"] for e in evs]
        if phases.count("s") != 1 or phases.count("f") != 1:
            problems.append(f"flow {fid}: needs one 's' and one 'f', has {phases}")
            continue
        ordered = sorted(evs, key=lambda e: (e["ts"], "stf".index(e["ph"])))
        if ordered[0]["ph"] != "s" or ordered[-1]["ph"] != "f":
            problems.append(f"flow {fid}: 's' must come first and 'f' last in time: {[(e['ph'], e['ts']) for e in ordered]}")
        if ordered[-1].get("bp") != "e":
            problems.append(f"flow {fid}: its 'f' binds to the next slice (no bp 'e')")
        for e in evs:
            track = slices.get((e["pid"], e["tid"]), [])
            if not any(x["ts"] <= e["ts"] <= x["ts"] + x["dur"] for x in track):
                problems.append(f"flow {fid}: {e['ph']} at {e['ts']} is inside no slice of track {(e['pid'], e['tid'])}")
    return problems


def check_trace(trace: dict) -> list[str]:
    """Problems of a {"traceEvents": [...]} trace; [] when it is well formed."""
    events = trace.get("traceEvents")
    if not isinstance(events, list) or not events:
        return ["no traceEvents list"]
    problems = [p for e in events for p in _fields(e)]
    if problems:
        return problems
    named = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    slices: dict[tuple[int, int], list[dict]] = defaultdict(list)
    flows: dict = defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            slices[(e["pid"], e["tid"])].append(e)
        elif e["ph"] in "stf":
            flows[(e["cat"], e["id"])].append(e)
        if e["ph"] != "M" and (e["pid"], e["tid"]) not in named:
            problems.append(f"track {(e['pid'], e['tid'])} has no thread_name")
    return problems + _nesting(slices) + _flows(flows, slices)
