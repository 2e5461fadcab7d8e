"""Streaming evaluation (ASAP's SPUR protocol): each annotated sample is scored against the newest output the
runtime had delivered by the sample's time, not against its own tick's output as if the model were instant.

A real-time replay (`bevstream replay --realtime`) records each scene's clock mapping in summary.json
(`source_stats.clock`, replay.nuscenes.source.ReplayStats): the wall time at which the pacer started the scene's
first cycle and that cycle's log time. A tick was delivered at the end of its last StageTiming (wall clock);
mapped onto the log it is `delivered_us`. For each sample, the tick used is the newest one (latest input
time) of its scene delivered at or before the sample's timestamp; none yet: an empty list. Its age is the
sample's timestamp minus the tick's input time. `compensate="velocity"` moves each box centre by its velocity
times that age in the global frame (ASAP's BEVDepth-Sv baseline).

    RUN/results_streaming.json  the official detection submission, one entry per sample of results_nusc.json
    RUN/streaming.json          the compensation, the clock, and per sample the tick used and its age
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from replay.nuscenes.submission import MAX_BOXES_PER_SAMPLE, read_submission, submission_boxes, write_submission
from runtime.report import percentiles
from schema.results import DetectionArrays, DropRecord, TickResult, record_from_json

if TYPE_CHECKING:
    from nuscenes.nuscenes import NuScenes

COMPENSATIONS: tuple[str, ...] = ("none", "velocity")
STREAMING_RESULTS = "results_streaming.json"
STREAMING_RECORD = "streaming.json"


@dataclass(frozen=True)
class DeliveredTick:
    """A tick's global-frame detections and when they existed, both on the log's clock."""

    scene: str
    frame_id: int
    timestamp_us: int  # the tick's input (sensor) time
    delivered_us: float  # when its result was delivered
    detections: DetectionArrays  # frame 'global'


@dataclass(frozen=True)
class SampleTime:
    """An annotated sample to score: its token, scene and timestamp (log clock, microseconds)."""

    token: str
    scene: str
    timestamp_us: int


def clock_by_scene(clock: Sequence[Mapping]) -> dict[str, Mapping]:
    """summary.json's `source_stats.clock` (one anchor per scene) keyed by scene; a malformed one is an error."""
    out = {}
    for anchor in clock:
        missing = [k for k in ("scene", "log_us", "wall_ns", "speed") if k not in anchor]
        if missing:
            raise ValueError(f"clock anchor {dict(anchor)} lacks {missing}")
        if not anchor["speed"] > 0:
            raise ValueError(f"clock anchor of {anchor['scene']} has speed {anchor['speed']}; it must be > 0")
        out[anchor["scene"]] = anchor
    return out


def delivered_ticks(records: Iterable[TickResult | DropRecord], clock: Sequence[Mapping]) -> list[DeliveredTick]:
    """The tick results of a run (drop records left out: they delivered nothing) with their delivery mapped onto
    the log's clock: log_us + (last stage end - wall_ns) / 1000 * speed of the tick's scene."""
    anchors = clock_by_scene(clock)
    out = []
    for r in records:
        if not isinstance(r, TickResult):
            continue
        if r.scene not in anchors:
            raise ValueError(f"tick {r.frame_id} is of scene {r.scene!r}, which has no clock anchor "
                             f"(anchored: {sorted(anchors)}); was the replay paced (--realtime)?")
        if not r.timings:
            raise ValueError(f"tick {r.frame_id} has no stage timings: when it was delivered is unknown")
        a = anchors[r.scene]
        end_ns = max(t.end_ns for t in r.timings)
        out.append(DeliveredTick(r.scene, r.frame_id, r.timestamp_us,
                                 a["log_us"] + (end_ns - a["wall_ns"]) / 1e3 * a["speed"], r.detections_global))
    return out


def newest_delivered(samples: Sequence[SampleTime], ticks: Sequence[DeliveredTick]) -> dict[str, DeliveredTick | None]:
    """Per sample token: the tick of its scene with the latest input time (then the highest frame id) among those
    delivered at or before the sample's timestamp; None before the scene's first delivery."""
    by_scene: dict[str, list[DeliveredTick]] = {}
    for t in ticks:
        by_scene.setdefault(t.scene, []).append(t)
    chosen: dict[str, DeliveredTick | None] = {}
    for scene, scene_ticks in by_scene.items():
        scene_ticks.sort(key=lambda t: t.delivered_us)
        best: list[DeliveredTick] = []  # best[i]: the newest of scene_ticks[:i + 1]
        for t in scene_ticks:
            newer = not best or (t.timestamp_us, t.frame_id) > (best[-1].timestamp_us, best[-1].frame_id)
            best.append(t if newer else best[-1])
        delivered = [t.delivered_us for t in scene_ticks]
        for s in samples:
            if s.scene == scene:
                n = bisect.bisect_right(delivered, s.timestamp_us)  # ticks delivered at or before the sample
                chosen[s.token] = best[n - 1] if n else None
    return {s.token: chosen.get(s.token) for s in samples}


def compensated(detections: DetectionArrays, age_s: float) -> DetectionArrays:
    """Global-frame detections moved on by their own velocity for `age_s` seconds: x += vx * age, y += vy * age."""
    if detections.frame != "global":
        raise ValueError(f"velocity compensation needs global-frame detections, got {detections.frame!r}")
    boxes = detections.boxes.astype(np.float64)  # (N, 9)
    boxes[:, 0:2] += boxes[:, 7:9] * age_s
    return replace(detections, boxes=boxes.astype(np.float32))


def streaming_results(samples: Sequence[SampleTime], ticks: Sequence[DeliveredTick], compensate: str = "none",
                      max_boxes: int = MAX_BOXES_PER_SAMPLE) -> tuple[dict[str, list[dict]], dict[str, dict | None]]:
    """(submission results, per sample the tick used) of the streaming protocol: each sample's boxes are those of
    `newest_delivered`, moved by velocity x age with compensate='velocity'. The second dict holds, per sample
    token, {'frame_id', 'timestamp_us', 'age_ms'} of the tick used, or None (an empty list was scored)."""
    if compensate not in COMPENSATIONS:
        raise ValueError(f"unknown compensation {compensate!r}; expected one of {COMPENSATIONS}")
    results, used = {}, {}
    time_of = {s.token: s.timestamp_us for s in samples}
    for token, tick in newest_delivered(samples, ticks).items():
        if tick is None:
            results[token], used[token] = [], None
            continue
        age_us = time_of[token] - tick.timestamp_us
        dets = compensated(tick.detections, age_us / 1e6) if compensate == "velocity" else tick.detections
        results[token] = submission_boxes(token, dets, max_boxes)
        used[token] = {"frame_id": tick.frame_id, "timestamp_us": tick.timestamp_us, "age_ms": age_us / 1e3}
    return results, used


def age_summary(used: Mapping[str, dict | None]) -> dict:
    """How old the outputs scored were: percentiles of age_ms over the samples that had one, and how many had none."""
    ages = [u["age_ms"] for u in used.values() if u is not None]
    return {"samples": len(used), "empty_samples": sum(u is None for u in used.values()), "age_ms": percentiles(ages)}


# ---- a run directory --------------------------------------------------------------------------------------


def run_summary(run_dir: str | Path) -> dict:
    """RUN/summary.json, which a finished run leaves."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a finished replay's run directory?")
    return json.loads(path.read_text())


def run_clock(run_dir: str | Path) -> list[dict]:
    """The clock mapping a real-time replay recorded in RUN/summary.json; a clear error where there is none."""
    clock = (run_summary(run_dir).get("source_stats") or {}).get("clock")
    if not clock:
        raise ValueError(f"{Path(run_dir) / 'summary.json'} records no replay clock (source_stats.clock): streaming "
                         "results need a replay paced in real time (bevstream replay --realtime)")
    return clock


def run_ticks(run_dir: str | Path) -> list[TickResult | DropRecord]:
    """Every record of RUN/ticks.jsonl."""
    path = Path(run_dir) / "ticks.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a replay's run directory?")
    return [record_from_json(json.loads(line)) for line in path.read_text().splitlines()]


def sample_times(nusc: "NuScenes", tokens: Iterable[str]) -> list[SampleTime]:
    """The samples `tokens` with their scene names and timestamps from the devkit's tables."""
    out = []
    for token in tokens:
        sample = nusc.get("sample", token)
        out.append(SampleTime(token, nusc.get("scene", sample["scene_token"])["name"], int(sample["timestamp"])))
    return out


def build_streaming(run_dir: str | Path, nusc: "NuScenes", compensate: str = "none",
                    max_boxes: int = MAX_BOXES_PER_SAMPLE) -> tuple[dict[str, list[dict]], dict]:
    """(results, record) of a run directory: the streaming results of every sample of its results_nusc.json,
    from its ticks.jsonl and the clock in its summary.json; the record is what streaming.json holds."""
    run_dir = Path(run_dir)
    clock = run_clock(run_dir)
    offline, _ = read_submission(run_dir / "results_nusc.json")
    samples = sample_times(nusc, offline)
    results, used = streaming_results(samples, delivered_ticks(run_ticks(run_dir), clock), compensate, max_boxes)
    return results, {"compensate": compensate, "clock": clock, **age_summary(used), "used": used}


def write_streaming(run_dir: str | Path, nusc: "NuScenes", compensate: str = "none",
                    max_boxes: int = MAX_BOXES_PER_SAMPLE) -> dict:
    """Write RUN/results_streaming.json and RUN/streaming.json (build_streaming); -> the record's summary."""
    run_dir = Path(run_dir)
    results, record = build_streaming(run_dir, nusc, compensate, max_boxes)
    write_submission(run_dir / STREAMING_RESULTS, results)
    (run_dir / STREAMING_RECORD).write_text(json.dumps(record, indent=1))
    return {k: v for k, v in record.items() if k != "used"}
