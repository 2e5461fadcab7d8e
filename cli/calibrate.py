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
import json
import sys
from pathlib import Path

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


def run(args: argparse.Namespace) -> int:
    from lab.calibration.box_rules import fit_box_rules, format_rules
    from lab.calibration.workflow import (Split, calibration_record, fit_tracker_then_rules, loaded_boxes,
                                          model_submission, replayed_submission, store_fits)
    from lab.devkit import eval_set_name
    from lab.recording import ticks_from_file
    from perception.checkpoint import load_trained_model
    from replay.nuscenes.clips import load_nusc
    from replay.nuscenes.submission import split_sample_tokens
    from runtime.config import ConfigError, load_config

    who = "bevstream calibrate"
    problem = _argument_problem(args)
    if problem:
        print(f"{who}: {problem}", file=sys.stderr)
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
    split = Split(nusc, eval_set, split_sample_tokens(nusc, eval_set, args.scenes), args.scenes)
    tracking = model.config.tracking
    try:
        results = args.results
        if results is None and ticks is None:
            if args.threads:
                import torch

                torch.set_num_threads(args.threads)
            results, ticks = model_submission(model, split, args.dataroot, args.version, args.out, args.keyframes_only,
                                              not args.no_progress, who)
        elif results is None:
            results = replayed_submission(ticks, tracking, model, split, args.out / "results_nusc.json")
        ev = loaded_boxes(results, split)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as exc:
        print(f"{who}: {exc}", file=sys.stderr)
        return 2

    track_fit, rules = None, None
    if ticks is None or not tracking.enabled or args.no_track_fit:
        why = ("--no-track-fit" if args.no_track_fit else "tracking is off" if not tracking.enabled
               else "a results file holds no per-frame boxes")
        print(f"{who}: the tracker's levels are kept ({why})")
    else:
        rules, track_fit, refit_on = fit_tracker_then_rules(ev, ticks, model, split, results, who)
        if rules is None:  # the other fits again, on the fitted tracker's boxes
            results, ev = refit_on, loaded_boxes(refit_on, split)
    if rules is None:
        rules = fit_box_rules(ev, split.tokens, model.config.detection, model.config.attributes, who)
        print(format_rules(rules))
    record = calibration_record(rules, track_fit, split, results, weights=str(args.weights),
                                dataroot=str(args.dataroot), version=args.version)
    (args.out / "calibration.json").write_text(json.dumps(record, indent=2))
    if args.write:
        print(store_fits(args.weights, rules, track_fit))
    else:
        print(f"not stored (dry run; --write stores them in {args.weights}); {args.out / 'calibration.json'}")
    return 0


def _argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the files the arguments name, in one line, or None."""
    if not args.weights.is_file():
        return f"weights not found: {args.weights}"
    for flag, path in (("results", args.results), ("ticks", args.ticks)):
        if path is not None and not path.is_file():
            return f"{flag} file not found: {path}"
    if args.results is not None and args.ticks is not None:
        return "give --results or --ticks, not both"
    return None
