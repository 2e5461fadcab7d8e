"""`bevstream calibrate`'s steps: the boxes to fit on (the model's, with no radius and no still speed, or a file's),
the tracker's levels on every frame's boxes replayed through it, then the radii, thresholds and still speeds
(lab.calibration.box_rules); the record of it all, and storing the fits in the weights file."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lab.calibration.box_rules import BoxRules, fit_box_rules, format_rules
from lab.calibration.tracking import TrackingFit, fit_tracking, levels_table, replay_tracker
from lab.devkit import complete_results, detection_metrics, loaded_detection_eval
from lab.model_run import predict_split
from lab.recording import TickBoxes, ticks_to_file
from perception.checkpoint import save_model_options
from replay.nuscenes.submission import read_submission, write_submission
from schema.classes import DETECTION_NAMES

OFF = (0.0,) * len(DETECTION_NAMES)  # no radius and no still speed, so that every candidate can be tried afterwards


@dataclass
class Split:
    """Where the fits are made: the loaded dataset, its split and the samples scored."""

    nusc: object  # nuscenes.NuScenes
    eval_set: str
    tokens: list[str]
    scenes: Sequence[str] | None = None


def replayed_submission(ticks: list[TickBoxes], levels, model, split: Split, path: Path) -> Path:
    """The recorded frames through the tracker at `levels`, with no radius and no still speed, as a submission."""
    replayed = replay_tracker(ticks, levels, OFF, OFF, model.config.attributes)
    return write_submission(path, complete_results(split.nusc, replayed, split.eval_set))


def model_submission(model, split: Split, dataroot: Path, version: str, out: Path, keyframes_only: bool,
                     progress: bool, who: str) -> tuple[Path, list[TickBoxes] | None]:
    """The model's boxes on the split with no radius and no still speed (and, with the tracker on, every frame's
    boxes as they reach it, saved to OUT/ticks.pt)."""
    head = model.detection_head
    head.config = dataclasses.replace(head.config, nms_radius_m=OFF, still_speed_mps=OFF)
    ticks = [] if model.config.tracking.enabled else None
    _, results = predict_split(model, split.nusc, dataroot, version, split.eval_set, out / "results_nusc.json", who,
                               scenes=split.scenes, keyframes_only=keyframes_only, progress=progress, record_ticks=ticks)
    if ticks is not None:
        ticks_to_file(ticks, out / "ticks.pt")
    return results, ticks


def loaded_boxes(results: Path, split: Split):
    """The devkit's loaded evaluation of a submission (loading and filtering once per fit); ValueError where no
    sample holds a box (the devkit cannot load such a submission)."""
    boxes = read_submission(results)[0]
    if not any(boxes.get(token) for token in split.tokens):
        raise ValueError(f"no predicted box on the {len(split.tokens)} samples to fit on ({results}); nothing to "
                         f"calibrate (untrained weights, or a score threshold above every box)")
    return loaded_detection_eval(split.nusc, results, split.eval_set)


def fit_tracker_then_rules(ev, ticks: list[TickBoxes], model, split: Split, results: Path, who: str
                           ) -> tuple[BoxRules | None, TrackingFit, Path]:
    """The tracker's levels, fitted among the radii, thresholds and still speeds of the boxes as they are. If the
    levels moved, the boxes are replayed through the fitted tracker and the rules returned are None (to be fitted
    again on those). -> (rules or None, the tracker's fit, the submission the rules are to be fitted on)."""
    tracking = model.config.tracking

    def nds_of(replayed):
        return detection_metrics(ev, replayed, split.tokens).nd_score

    def report(trial):
        print(f"  tracker {' '.join(f'{k}={v:g}' for k, v in trial.levels.items())}: NDS {trial.score:.4f}", flush=True)

    rules = fit_box_rules(ev, split.tokens, model.config.detection, model.config.attributes, who)
    print(f"{who}: the radii, thresholds and still speeds with the tracker's levels as they are:\n{format_rules(rules)}")
    print(f"{who}: fitting the tracker's levels on {len(ticks)} frames ({len(split.tokens)} samples scored)", flush=True)
    track_fit = fit_tracking(ticks, tracking, nds_of, rules.nms_radius_m, rules.still_speed_mps, rules.attributes,
                             progress=report)
    print(levels_table(track_fit))
    if track_fit.levels == track_fit.previous_levels:
        return rules, track_fit, results
    return None, track_fit, replayed_submission(ticks, dataclasses.replace(tracking, **track_fit.levels), model, split,
                                                results)


def calibration_record(rules: BoxRules, track_fit: TrackingFit | None, split: Split, results: Path, **meta) -> dict:
    """What calibration.json holds: the inputs (`meta`), every fit and the fitted values."""
    return {**meta, "eval_set": split.eval_set, "scenes": split.scenes, "samples": len(split.tokens),
            "results": str(results), "attributes": dataclasses.asdict(rules.attributes),
            "fits": [dataclasses.asdict(f) for f in rules.attribute_fits], **fitted_detection(rules),
            "radius_fits": [dataclasses.asdict(f) for f in rules.radius_fits],
            "still_speed_fits": [dataclasses.asdict(f) for f in rules.still_fits],
            "tracking": None if track_fit is None else track_fit.levels,
            "tracking_fit": None if track_fit is None else dataclasses.asdict(track_fit)}


def fitted_detection(rules: BoxRules) -> dict:
    return {"nms_radius_m": rules.nms_radius_m, "still_speed_mps": rules.still_speed_mps}


def store_fits(weights: Path, rules: BoxRules, track_fit: TrackingFit | None) -> str:
    """Write the fits into the weights file's model config; -> one line saying what was stored."""
    if track_fit is not None:
        save_model_options(weights, "tracking", track_fit.levels)
    save_model_options(weights, "attributes", dataclasses.asdict(rules.attributes))
    save_model_options(weights, "detection", fitted_detection(rules))
    stored = "" if track_fit is None else f"model.tracking: {track_fit.levels}, "
    return (f"stored in {weights}: {stored}model.attributes = {dataclasses.asdict(rules.attributes)}, "
            f"model.detection: {fitted_detection(rules)}")
