"""The run directory a replay or stream leaves behind (plain I/O, no Ray; SinkActor wraps it).

    RUN/ticks.jsonl        one JSON line per tick result or drop record, in arrival order
    RUN/results_nusc.json  the official nuScenes detection submission: {"meta": {...}, "results":
                           {sample_token: [box, ...]}}, every expected keyframe sample present
                           (an empty list where its tick was dropped or found nothing)
    RUN/results_tracking.json  with the box tracker on: the official nuScenes tracking submission, the same
                           keyframe boxes of the seven tracking classes with their track ids
    RUN/summary.json       counts, drops by reason, latency percentiles, configuration
    RUN/seg/FRAME.png      with output.save_seg: each tick's per-camera segmentation labels (viz --video)
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from replay.nuscenes.submission import ids_by_score, submission_boxes, tracking_entries, write_submission
from schema.results import DropRecord, TickResult


SEG_DIR = "seg"


def seg_path(seg_dir: Path, frame_id: int) -> Path:
    return seg_dir / f"{frame_id:08d}.png"


def write_seg(seg_dir: Path, result: TickResult) -> Path:
    """A tick's (Ncam, h, w) uint8 label maps as one lossless greyscale PNG, the cameras stacked (Ncam * h, w); its
    ticks.jsonl line names the cameras (seg_channels) and the shape (seg_shape)."""
    path = seg_path(seg_dir, result.frame_id)
    Image.fromarray(np.ascontiguousarray(result.seg.reshape(-1, result.seg.shape[-1]))).save(path, optimize=False)
    return path


def read_seg(seg_dir: Path, result: TickResult) -> TickResult:
    """`result` (read back from ticks.jsonl, without its label maps) with them from seg_dir, where they are."""
    path = seg_path(seg_dir, result.frame_id)
    if not path.is_file():
        return result
    labels = np.asarray(Image.open(path), np.uint8)  # (Ncam * h, w)
    return replace(result, seg=labels.reshape(len(result.seg_channels), -1, labels.shape[-1]))


def keyframe_entries(result: TickResult, max_boxes: int = 500, track_prefix: str = "") -> tuple[list[dict], list[dict] | None]:
    """A keyframe tick's official submission boxes and, with track ids, its tracking boxes (`track_prefix` before
    each id): what the sink writes for it, and what `bevstream eval` scores."""
    dets = result.detections_global
    boxes = submission_boxes(result.sample_token, dets, max_boxes)
    if dets.track_ids is None:
        return boxes, None
    return boxes, tracking_entries(boxes, ids_by_score(dets.scores, dets.track_ids), track_prefix)


class ResultSink:
    """Streams records to ticks.jsonl and collects keyframe detections for results_nusc.json (and, with track
    ids, results_tracking.json)."""

    def __init__(self, out_dir: str | Path, expected_samples: Iterable[str] | None = None, max_boxes: int = 500,
                 save_seg: bool = False):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_boxes = max_boxes
        self.seg_dir = self.out_dir / SEG_DIR if save_seg else None
        if self.seg_dir is not None:
            self.seg_dir.mkdir(exist_ok=True)
        self.results: dict[str, list[dict]] = {t: [] for t in (expected_samples or ())}
        self.tracks: dict[str, list[dict]] | None = None  # as results, once a tick carries track ids
        self._ticks = open(self.out_dir / "ticks.jsonl", "w")
        self.written = 0

    def write(self, record: TickResult | DropRecord) -> None:
        self._ticks.write(json.dumps(record.to_json()) + "\n")
        self._ticks.flush()
        self.written += 1
        if self.seg_dir is not None and isinstance(record, TickResult) and record.seg.size:
            write_seg(self.seg_dir, record)
        if record.sample_token is not None:
            boxes, tracks = keyframe_entries(record, self.max_boxes) if isinstance(record, TickResult) else ([], None)
            self.results.setdefault(record.sample_token, [])
            if boxes:
                self.results[record.sample_token] = boxes
            if tracks is not None:
                self.tracks = self.tracks if self.tracks is not None else {}
                self.tracks[record.sample_token] = tracks

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
