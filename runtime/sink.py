"""The run directory a replay or stream leaves behind (plain I/O, no Ray; SinkActor wraps it).

    RUN/ticks.jsonl        one JSON line per tick result or drop record, in arrival order
    RUN/results_nusc.json  the official nuScenes detection submission: {"meta": {...}, "results":
                           {sample_token: [box, ...]}}, every expected keyframe sample present
                           (an empty list where its tick was dropped or found nothing)
    RUN/results_tracking.json  with the box tracker on: the official nuScenes tracking submission, the same
                           keyframe boxes of the seven tracking classes with their track ids
    RUN/summary.json       counts, drops by reason, latency percentiles, configuration
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable


from replay.nuscenes.submission import ids_by_score, submission_boxes, tracking_entries, write_submission
from schema.results import DropRecord, TickResult


class ResultSink:
    """Streams records to ticks.jsonl and collects keyframe detections for results_nusc.json (and, with track
    ids, results_tracking.json)."""

    def __init__(self, out_dir: str | Path, expected_samples: Iterable[str] | None = None, max_boxes: int = 500):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_boxes = max_boxes
        self.results: dict[str, list[dict]] = {t: [] for t in (expected_samples or ())}
        self.tracks: dict[str, list[dict]] | None = None  # as results, once a tick carries track ids
        self._ticks = open(self.out_dir / "ticks.jsonl", "w")
        self.written = 0

    def write(self, record: TickResult | DropRecord) -> None:
        self._ticks.write(json.dumps(record.to_json()) + "\n")
        self._ticks.flush()
        self.written += 1
        if record.sample_token is not None:
            boxes = (submission_boxes(record.sample_token, record.detections_global, self.max_boxes)
                     if isinstance(record, TickResult) else [])
            self.results.setdefault(record.sample_token, [])
            if boxes:
                self.results[record.sample_token] = boxes
            if isinstance(record, TickResult) and record.detections_global.track_ids is not None:
                self.tracks = self.tracks if self.tracks is not None else {}
                dets = record.detections_global
                self.tracks[record.sample_token] = tracking_entries(boxes, ids_by_score(dets.scores, dets.track_ids))

    def close(self, summary: dict | None = None) -> dict:
        """Finish the files; returns the paths written."""
        self._ticks.close()
        write_submission(self.out_dir / "results_nusc.json", self.results)
        paths = {"ticks": str(self.out_dir / "ticks.jsonl"), "results_nusc": str(self.out_dir / "results_nusc.json")}
        if self.tracks is not None:
            tracks = {token: self.tracks.get(token, []) for token in self.results}  # every sample results_nusc has
            paths["results_tracking"] = str(write_submission(self.out_dir / "results_tracking.json", tracks))
        else:  # no tracker this run: an earlier run's tracks must not pass for this one's
            (self.out_dir / "results_tracking.json").unlink(missing_ok=True)
        if summary is not None:
            (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            paths["summary"] = str(self.out_dir / "summary.json")
        return paths
