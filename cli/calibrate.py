"""`bevstream calibrate`: fit the post-processing settings that depend on a weights file's own errors.

- Attribute speed thresholds: the model predicts no attribute; a box is named moving above its group's
  speed threshold (schema.attributes), and the threshold that suits a model depends on how noisy its
  velocities are.
- Circle-NMS radii: per class, the centre distance within which a lower-scored box is a duplicate
  (lab.calibration.nms_radius), which depends on how far apart the model places its duplicates.
- Still speeds: per class, the speed below which a box is reported at velocity 0 (perception.still_speed),
  which depends on how noisy the model's velocity of parked objects is.
- The box tracker's levels (lab.calibration.tracking): how far it trusts the decoded centres and velocities,
  which tracks report their averaged centre, and how much a track's score history counts.

The radii are fitted first, then the thresholds, then the still speeds on the boxes the fitted radii keep,
each at most its class's threshold (a box named moving keeps its velocity); then the tracker's levels, on
every frame's boxes replayed through it with those around it; and if the levels changed, the radii,
thresholds and still speeds once more on the boxes the fitted tracker puts out. All are fitted on a split
the weights were trained on (never the evaluation split) and stored in the file's model config, where
`eval`, `replay` and `stream` read them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schema.attributes import AttributeConfig

HELP = ("Fit the box tracker's levels, attribute speed thresholds, circle-NMS radii and still speeds of a weights "
        "file on a training split (and store them with --write).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, required=True, help="weights file (or checkpoint) to calibrate")
    parser.add_argument("--dataroot", type=Path, required=True, help="nuScenes-format dataroot")
    parser.add_argument("--version", default="v1.0-mini", help="devkit table version (default v1.0-mini)")
    parser.add_argument("--split", default="train", help="'train' or a devkit split name (default train); not the split "
                                                         "you report")
    parser.add_argument("--scenes", nargs="+", default=None, help="only these scenes of the split")
    parser.add_argument("--results", type=Path, default=None,
                        help="a submission file of these weights on the split with no NMS radius and no still speed (as "
                             "calibrate makes them), instead of running the model; the tracker's levels are not fitted")
    parser.add_argument("--ticks", type=Path, default=None,
                        help="every frame's boxes as a previous calibrate of these weights saved them (OUT/ticks.pt), "
                             "instead of running the model")
    parser.add_argument("--no-track-fit", action="store_true", help="keep the tracker's levels; fit the rest")
    parser.add_argument("--keyframes-only", action="store_true", help="run the model on keyframes only")
    parser.add_argument("--out", type=Path, default=Path("runs/calibrate"),
                        help="results_nusc.json, calibration.json and ticks.pt go here (default runs/calibrate)")
    parser.add_argument("--write", action="store_true",
                        help="store the fitted tracker levels, thresholds, radii and still speeds in the weights file")
    parser.add_argument("--config", type=Path, default=None,
                        help="runtime.yaml whose model section is laid over the weights' config when the model runs "
                             "(as in eval: the score threshold); default: the project's runtime.yaml")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true")


def format_fits(fits) -> str:
    rows = [f"{'group':<12}{'boxes':>7}{'threshold m/s':>15}{'right':>8}   (before: threshold, right)"]
    for f in fits:
        rows.append(f"{f.group:<12}{f.boxes:>7}{f.threshold:>15.2f}{f.accuracy:>8.3f}   "
                    f"({f.previous_threshold:.2f}, {f.previous_accuracy:.3f})")
    return "\n".join(rows)


def format_radius_fits(fits) -> str:
    rows = [f"{'class':<22}{'boxes':>7}{'radius m':>10}{'AP':>8}   (before: radius, AP)"]
    for f in fits:
        rows.append(f"{f.name:<22}{f.boxes:>7}{f.radius:>10.1f}{f.ap:>8.3f}   ({f.previous_radius:.1f}, {f.previous_ap:.3f})")
    return "\n".join(rows)


def format_still_speed_fits(fits) -> str:
    rows = [f"{'class':<22}{'boxes':>7}{'still m/s':>11}{'AVE':>8}   (before: still speed, AVE)"]
    for f in fits:
        rows.append(f"{f.name:<22}{f.boxes:>7}{f.still_speed:>11.2f}{f.vel_err:>8.3f}   "
                    f"({f.previous_still_speed:.2f}, {f.previous_vel_err:.3f})")
    return "\n".join(rows)


@dataclass(frozen=True)
class BoxRules:
    """The circle-NMS radii, attribute thresholds and still speeds fitted on one set of boxes, with their fits."""

    radius_fits: list
    attribute_fits: list
    attributes: "AttributeConfig"
    still_fits: list
    nms_radius_m: list[float]
    still_speed_mps: list[float]


def fit_box_rules(ev, tokens: list[str], detection, attributes, who: str) -> BoxRules:
    """On a loaded DetectionEval `ev` of boxes with no radius and no still speed: the radii, then the attribute
    thresholds, then the still speeds of the boxes the fitted radii keep, each capped by its class's threshold.
    `detection` and `attributes` hold the weights' current values (kept where a fit has no box to go on)."""
    from lab.calibration.attributes import fit_moving_speed
    from schema.attributes import GROUP_OF_CLASS
    from schema.classes import DETECTION_NAMES
    from lab.devkit import matched_attributes
    from lab.calibration.nms_radius import fit_nms_radii, with_radii
    from lab.calibration.still_speed import fit_still_speeds

    radius_fits = fit_nms_radii(ev, tokens, detection.nms_radius_m)
    radii = [f.radius for f in radius_fits]
    fits, thresholds = [], {}
    for group, (speeds, gt_attributes) in matched_attributes(ev).items():
        if not len(speeds):
            print(f"{who}: no true positive of group {group!r} on this split; its threshold stays "
                  f"{attributes.threshold(group)}", file=sys.stderr)
            continue
        fit = fit_moving_speed(speeds, gt_attributes, group, previous=attributes.threshold(group))
        fits.append(fit)
        thresholds[f"{group}_moving_mps"] = round(fit.threshold, 3)
    fitted = dataclasses.replace(attributes, **thresholds)
    moving_speed = {name: fitted.threshold(group) for name, group in GROUP_OF_CLASS.items()}  # caps the still speeds
    still_fits = fit_still_speeds(ev, with_radii(ev.pred_boxes, tokens, radii), tokens, detection.still_speed_mps, moving_speed)
    still_speed = dict(zip(DETECTION_NAMES, detection.still_speed_mps)) | {f.name: f.still_speed for f in still_fits}
    return BoxRules(radius_fits, fits, fitted, still_fits, radii, [still_speed[n] for n in DETECTION_NAMES])


def format_rules(rules: BoxRules) -> str:
    return "\n".join([format_radius_fits(rules.radius_fits), format_fits(rules.attribute_fits),
                      format_still_speed_fits(rules.still_fits)])


def run(args: argparse.Namespace) -> int:
    from schema.classes import DETECTION_NAMES
    from lab.devkit import complete_results, eval_set_name, loaded_detection_eval
    from lab.calibration.tracking import replay_tracker
    from lab.recording import ticks_from_file, ticks_to_file
    from perception.checkpoint import load_trained_model, save_model_options
    from replay.nuscenes.clips import load_nusc
    from replay.nuscenes.submission import read_submission, split_sample_tokens, write_submission
    from runtime.config import ConfigError, load_config

    who = "bevstream calibrate"
    if not args.weights.is_file():
        print(f"{who}: weights not found: {args.weights}", file=sys.stderr)
        return 2
    for flag, path in (("results", args.results), ("ticks", args.ticks)):
        if path is not None and not path.is_file():
            print(f"{who}: {flag} file not found: {path}", file=sys.stderr)
            return 2
    if args.results is not None and args.ticks is not None:
        print(f"{who}: give --results or --ticks, not both", file=sys.stderr)
        return 2
    try:
        eval_set = eval_set_name(args.version, args.split)
        nusc = load_nusc(str(args.dataroot), args.version)
        model = load_trained_model(args.weights, load_config(args.config).model.options)  # post-processing as eval runs it
        ticks = None if args.ticks is None else ticks_from_file(args.ticks)
    except (ConfigError, ValueError, FileNotFoundError, OSError, RuntimeError) as exc:
        print(f"{who}: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    tokens = split_sample_tokens(nusc, eval_set, args.scenes)
    detection, tracking = model.config.detection, model.config.tracking
    off = (0.0,) * len(DETECTION_NAMES)  # no radius and no still speed, so that every candidate can be tried afterwards
    results_path = args.out / "results_nusc.json"

    def write_replay(levels) -> Path:
        """The recorded frames through the tracker at `levels`, with no radius and no still speed, as a submission."""
        replayed = replay_tracker(ticks, levels, off, off, model.config.attributes)
        return write_submission(results_path, complete_results(nusc, replayed, eval_set))

    results = args.results
    if results is None and ticks is None:
        import torch

        from cli.evaluate import predict_split

        if args.threads:
            torch.set_num_threads(args.threads)
        head = model.detection_head
        head.config = dataclasses.replace(head.config, nms_radius_m=off, still_speed_mps=off)
        ticks = [] if tracking.enabled else None
        try:
            _, results = predict_split(model, nusc, args, eval_set, results_path, who, record_ticks=ticks)
        except (FileNotFoundError, ValueError) as exc:
            print(f"{who}: {exc}", file=sys.stderr)
            return 2
        if ticks is not None:
            ticks_to_file(ticks, args.out / "ticks.pt")
    elif results is None:
        results = write_replay(tracking)
    try:
        boxes = read_submission(results)[0]
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"{who}: {exc}", file=sys.stderr)
        return 2
    if not any(boxes.get(token) for token in tokens):  # the devkit cannot load a submission without a box
        print(f"{who}: no predicted box on the {len(tokens)} samples to fit on ({results}); nothing to calibrate "
              f"(untrained weights, or a score threshold above every box)", file=sys.stderr)
        return 2
    ev = loaded_detection_eval(nusc, results, eval_set)  # the devkit's loading and filtering, once per fit

    track_fit, rules = None, None
    if ticks is None or not tracking.enabled or args.no_track_fit:
        why = ("--no-track-fit" if args.no_track_fit else "tracking is off" if not tracking.enabled
               else "a results file holds no per-frame boxes")
        print(f"{who}: the tracker's levels are kept ({why})")
    else:
        from lab.devkit import detection_metrics
        from lab.calibration.tracking import fit_tracking, levels_table

        def nds_of(replayed):
            return detection_metrics(ev, replayed, tokens).nd_score

        def report(trial):
            print(f"  tracker {' '.join(f'{k}={v:g}' for k, v in trial.levels.items())}: NDS {trial.score:.4f}", flush=True)

        rules = fit_box_rules(ev, tokens, detection, model.config.attributes, who)  # the levels act among these
        print(f"{who}: the radii, thresholds and still speeds with the tracker's levels as they are:\n{format_rules(rules)}")
        print(f"{who}: fitting the tracker's levels on {len(ticks)} frames ({len(tokens)} samples scored)", flush=True)
        track_fit = fit_tracking(ticks, tracking, nds_of, rules.nms_radius_m, rules.still_speed_mps, rules.attributes,
                                 progress=report)
        print(levels_table(track_fit))
        if track_fit.levels != track_fit.previous_levels:  # the other fits again, on the fitted tracker's boxes
            results = write_replay(dataclasses.replace(tracking, **track_fit.levels))
            ev = loaded_detection_eval(nusc, results, eval_set)
            rules = None

    if rules is None:
        rules = fit_box_rules(ev, tokens, detection, model.config.attributes, who)
        print(format_rules(rules))
    fitted = rules.attributes
    fitted_detection = {"nms_radius_m": rules.nms_radius_m, "still_speed_mps": rules.still_speed_mps}
    record = {"weights": str(args.weights), "dataroot": str(args.dataroot), "version": args.version, "eval_set": eval_set,
              "scenes": args.scenes, "samples": len(tokens), "results": str(results),
              "attributes": dataclasses.asdict(fitted), "fits": [dataclasses.asdict(f) for f in rules.attribute_fits],
              **fitted_detection, "radius_fits": [dataclasses.asdict(f) for f in rules.radius_fits],
              "still_speed_fits": [dataclasses.asdict(f) for f in rules.still_fits],
              "tracking": None if track_fit is None else track_fit.levels,
              "tracking_fit": None if track_fit is None else dataclasses.asdict(track_fit)}
    (args.out / "calibration.json").write_text(json.dumps(record, indent=2))
    if args.write:
        if track_fit is not None:
            save_model_options(args.weights, "tracking", track_fit.levels)
        save_model_options(args.weights, "attributes", dataclasses.asdict(fitted))
        save_model_options(args.weights, "detection", fitted_detection)
        stored = "" if track_fit is None else f"model.tracking: {track_fit.levels}, "
        print(f"stored in {args.weights}: {stored}model.attributes = {dataclasses.asdict(fitted)}, "
              f"model.detection: {fitted_detection}")
    else:
        print(f"not stored (dry run; --write stores them in {args.weights}); {args.out / 'calibration.json'}")
    return 0
