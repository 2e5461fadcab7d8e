"""`bevstream eval`'s two ways to a report: score a submission file (a replay's), or run a model over the split
and score its detections, tracks, segmentation and road geometry; the tracks are scored the same way for both."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lab.devkit import complete_results, evaluate_results_file, run_detection_eval
from lab.model_run import predict_split
from lab.report import evaluation_report
from lab.tracking_eval import run_tracking_eval, tracking_submission
from replay.nuscenes.submission import write_submission
from schema.classes import DETECTION_NAMES


@dataclass
class Split:
    """The scored split of one dataroot, and where the report and the devkit's outputs go."""

    nusc: object  # nuscenes.NuScenes
    dataroot: Path
    version: str
    eval_set: str
    out: Path
    max_range: float | None = None

    def meta(self) -> dict:
        return {"dataroot": str(self.dataroot), "version": self.version, "eval_set": self.eval_set,
                "max_range_m": self.max_range}


def score_results_file(split: Split, results: Path, tracking_results: Path | None = None) -> dict:
    """The report of a submission file (detection; tracking too with `tracking_results`)."""
    tracks = None if tracking_results is None else tracking_submission(tracking_results)
    detection = evaluate_results_file(split.nusc, results, split.eval_set, split.out / "detection", verbose=False,
                                      max_range=split.max_range)
    meta = {**split.meta(), "source": "results file", "results": str(results)}
    if tracks is not None:
        meta["tracking_results"] = str(tracking_results)
    report = evaluation_report(detection, None, None, meta)
    report["segmentation"] = report["road"] = "not available (scoring a results file: detection only)"
    report["tracking"] = "not available (no --tracking-results file)"
    return _with_tracks(report, tracks, split)


def score_streaming(split: Split, run_dir: Path, offline_results: Path | None = None) -> dict:
    """Offline against streaming for one real-time replay, each scored by the devkit: its results_nusc.json (every
    sample scored with its own tick, as if the model were instant; `offline_results`: that file instead, e.g. an
    unpaced replay's), and the streaming results built from its ticks and clock (lab.streaming) without and with
    velocity compensation. -> the report, one column each. A paced run that passed over late cycles
    (source.nuscenes.skip_late) has no output for their samples: its own column is then 'own tick', not offline."""
    from lab.streaming import COMPENSATIONS, STREAMING_RESULTS, build_streaming, run_summary

    run_dir = Path(run_dir)
    summary = run_summary(run_dir)
    max_boxes = (summary.get("config") or {}).get("output", {}).get("submission_max_boxes", 500)
    skipped = (summary.get("source_stats") or {}).get("late_skipped", 0)
    own = offline_results is None
    name = "own tick" if own and skipped else "offline"
    offline = evaluate_results_file(split.nusc, run_dir / "results_nusc.json" if own else Path(offline_results),
                                    split.eval_set, split.out / "offline" / "detection", max_range=split.max_range)
    note = ("each sample scored with its own tick's output: age 0" if name == "offline" else
            f"each sample scored with its own tick's output, but the run passed over {skipped} late cycles (their "
            "samples have none): score an unpaced replay's results_nusc.json with --results for the offline figure")
    columns = {name: {"detection": offline, "age_ms": {"p50": 0.0, "p99": 0.0}, "note": note}}
    for compensate in COMPENSATIONS:
        results, record = build_streaming(run_dir, split.nusc, compensate, max_boxes)
        name = "streaming" if compensate == "none" else f"streaming+{compensate}"
        path = write_submission(split.out / name / STREAMING_RESULTS, results)
        detection = evaluate_results_file(split.nusc, path, split.eval_set, split.out / name / "detection",
                                          max_range=split.max_range)
        columns[name] = {"detection": detection, "results": str(path),
                         **{k: record[k] for k in ("compensate", "samples", "empty_samples", "age_ms")}}
    meta = {**split.meta(), "source": "streaming", "run": str(run_dir), "clock": record["clock"]}
    return {"meta": meta, "streaming": columns}


def score_model(model, checkpoint: Path | None, split: Split, scenes: Sequence[str] | None = None,
                keyframes_only: bool = False, reset_every: int | None = None, progress: bool = True,
                scaled_decode: bool = True) -> dict:
    """The report of `model` run over the split (predict_split: the runtime's tick; `scaled_decode` as the replay's
    pipeline.scaled_decode): detection, tracks, segmentation, road."""
    run, path = predict_split(model, split.nusc, split.dataroot, split.version, split.eval_set,
                              split.out / "results_nusc.json", "bevstream eval", scenes=scenes,
                              keyframes_only=keyframes_only, reset_every=reset_every, progress=progress,
                              scaled_decode=scaled_decode)
    detection = run_detection_eval(split.nusc, path, split.eval_set, split.out / "detection", max_range=split.max_range)
    detection["samples_without_predictions"] = sum(1 for t in json.loads(path.read_text())["results"]
                                                   if t not in run.results)
    head = model.detection_head.config
    meta = {**split.meta(), "source": "model", "checkpoint": None if checkpoint is None else str(checkpoint),
            "frames": run.frames, "keyframes": run.keyframes, "dropped": run.dropped, "scaled_decode": scaled_decode,
            "model_wall_s": round(run.wall_s, 2),
            "video_module": bool(model.config.video.enabled), "reset_every": reset_every, "results": str(path),
            "attributes": dataclasses.asdict(model.config.attributes),
            "nms_radius_m": dict(zip(DETECTION_NAMES, head.nms_radius_m)),
            "still_speed_mps": dict(zip(DETECTION_NAMES, head.still_speed_mps)),
            "tracking": dataclasses.asdict(model.config.tracking)}
    report = evaluation_report(detection, run.segmentation.result(), run.road.result(), meta)
    report["tracking"] = "not available (the model's tracker is off: model.tracking.enabled)"
    return _with_tracks(report, run.tracks, split)


def _with_tracks(report: dict, tracks: dict[str, list[dict]] | None, split: Split) -> dict:
    """The report with the tracks (sample token -> tracking boxes) scored by the devkit's TrackingEval, if any."""
    if tracks is not None:
        path = write_submission(split.out / "results_tracking.json", complete_results(split.nusc, tracks, split.eval_set))
        report["tracking"] = run_tracking_eval(split.dataroot, split.version, path, split.eval_set,
                                               split.out / "tracking", max_range=split.max_range)
    return report
