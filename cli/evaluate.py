"""`bevstream eval`: score a model (or a results file) on a split: nuScenes detection and tracking, segmentation,
road geometry."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

HELP = ("Evaluate on a split: the devkit's DetectionEval (NDS, mAP, ...) and, with the tracker on, TrackingEval "
        "(AMOTA, ...), image segmentation and road-geometry metrics.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataroot", type=Path, required=True, help="nuScenes-format dataroot")
    parser.add_argument("--version", default="v1.0-mini", help="devkit table version (default v1.0-mini)")
    parser.add_argument("--split", default="val", help="'val', 'train' or a devkit split name such as mini_val (default val)")
    parser.add_argument("--results", type=Path, default=None,
                        help="score this submission JSON (e.g. a replay's results_nusc.json) instead of running the model; "
                             "detection only (and tracking with --tracking-results)")
    parser.add_argument("--tracking-results", type=Path, default=None,
                        help="with --results: also score this tracking submission JSON (a replay's results_tracking.json) "
                             "with the devkit's TrackingEval")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="model weights (default: model.checkpoint of the config, else the shipped weights)")
    parser.add_argument("--out", type=Path, default=Path("runs/eval"), help="report and devkit outputs go here (default runs/eval)")
    parser.add_argument("--keyframes-only", action="store_true",
                        help="run the model on keyframes only (faster; the temporal state then sees 2 Hz steps)")
    parser.add_argument("--scenes", nargs="+", default=None, help="only these scenes of the split (detection then scores "
                                                                   "the other samples as empty)")
    parser.add_argument("--reset-every", type=int, default=None, metavar="N",
                        help="start every N-th frame from a fresh temporal state (1: no history; an ablation of the video module)")
    parser.add_argument("--max-range", type=float, default=None, metavar="M",
                        help="score detection within M metres of the ego only (caps the devkit's per-class ranges, "
                             "50 m for cars)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--config", type=Path, default=None, help="runtime.yaml (model section, checkpoint)")
    parser.add_argument("--no-progress", action="store_true")


def predict_split(model, nusc, args: argparse.Namespace, eval_set: str, results_path: Path, who: str,
                  record_ticks: list | None = None):
    """Run `model` over the split's scenes (args.dataroot, version, scenes, keyframes_only, reset_every,
    no_progress) and write the complete submission file. -> (lab.model_run.ModelRun, its path).
    `record_ticks`: as lab.model_run.run_model's."""
    from lab.devkit import complete_results
    from lab.model_run import run_model
    from lab.groundtruth import GroundTruth
    from replay.nuscenes.source import NuScenesSource
    from replay.nuscenes.submission import write_submission

    source = NuScenesSource(args.dataroot, args.version, scenes=args.scenes, split=eval_set,
                            keyframes_only=args.keyframes_only)
    print(f"{who}: {source.describe()}", flush=True)
    gt = GroundTruth(nusc, model.config.grid)
    mr = run_model(model, source, gt, progress=not args.no_progress, reset_every=getattr(args, "reset_every", None),
                   record_ticks=record_ticks)
    return mr, write_submission(results_path, complete_results(nusc, mr.results, eval_set))


def run(args: argparse.Namespace) -> int:
    from lab.devkit import complete_results, evaluate_results_file, eval_set_name, run_detection_eval
    from lab.report import evaluation_report, format_report
    from lab.tracking_eval import run_tracking_eval, tracking_submission
    from replay.nuscenes.clips import load_nusc
    from replay.nuscenes.submission import write_submission
    from runtime.config import ConfigError, load_config, validate_model_options

    if args.reset_every is not None and args.reset_every < 1:
        print(f"bevstream eval: --reset-every must be >= 1, got {args.reset_every}", file=sys.stderr)
        return 2
    if args.max_range is not None and not args.max_range > 0:
        print(f"bevstream eval: --max-range must be > 0 metres, got {args.max_range}", file=sys.stderr)
        return 2
    if args.tracking_results is not None and args.results is None:
        print("bevstream eval: --tracking-results goes with --results (a model run scores its own tracks)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
        validate_model_options(cfg)  # a bad model key fails here, in one line, not while loading the weights
        eval_set = eval_set_name(args.version, args.split)
        nusc = load_nusc(str(args.dataroot), args.version)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"bevstream eval: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"dataroot": str(args.dataroot), "version": args.version, "eval_set": eval_set, "max_range_m": args.max_range}
    t0 = time.perf_counter()

    if args.results is not None:
        for path in (args.results, args.tracking_results):
            if path is not None and not path.is_file():
                print(f"bevstream eval: results file not found: {path}", file=sys.stderr)
                return 2
        try:
            tracks = None if args.tracking_results is None else tracking_submission(args.tracking_results)
        except (ValueError, json.JSONDecodeError) as exc:
            print(f"bevstream eval: {exc}", file=sys.stderr)
            return 2
        detection = evaluate_results_file(nusc, args.results, eval_set, out / "detection", verbose=False,
                                          max_range=args.max_range)
        meta.update(source="results file", results=str(args.results))
        report = evaluation_report(detection, None, None, meta)
        report["segmentation"] = report["road"] = "not available (scoring a results file: detection only)"
        report["tracking"] = "not available (no --tracking-results file)"
        if tracks is not None:
            meta["tracking_results"] = str(args.tracking_results)
    else:
        import torch

        from schema.classes import DETECTION_NAMES
        from perception.model import BEVStreamModel
        from perception.checkpoint import load_trained_model

        if args.threads:
            torch.set_num_threads(args.threads)
        ckpt = args.checkpoint if args.checkpoint is not None else cfg.model.resolved_checkpoint()
        if ckpt is not None:
            if not Path(ckpt).exists():
                print(f"bevstream eval: checkpoint not found: {ckpt}", file=sys.stderr)
                return 2
            model = load_trained_model(ckpt, cfg.model.options)
        else:
            from perception.config import model_config_from_dict
            from runtime.model_adapter import random_weights_warning

            print(random_weights_warning(), file=sys.stderr)
            model = BEVStreamModel(model_config_from_dict(cfg.model.options)).eval()
        print(f"bevstream eval: checkpoint {ckpt or 'none (random weights)'}", flush=True)
        try:
            mr, path = predict_split(model, nusc, args, eval_set, out / "results_nusc.json", "bevstream eval")
        except (FileNotFoundError, ValueError) as exc:
            print(f"bevstream eval: {exc}", file=sys.stderr)
            return 2
        detection = run_detection_eval(nusc, path, eval_set, out / "detection", max_range=args.max_range)
        detection["samples_without_predictions"] = sum(1 for t in json.loads(path.read_text())["results"] if t not in mr.results)
        meta.update(source="model", checkpoint=None if ckpt is None else str(ckpt), frames=mr.frames,
                    keyframes=mr.keyframes, model_wall_s=round(mr.wall_s, 2),
                    video_module=bool(model.config.video.enabled), reset_every=args.reset_every, results=str(path),
                    attributes=dataclasses.asdict(model.config.attributes),
                    nms_radius_m=dict(zip(DETECTION_NAMES, model.detection_head.config.nms_radius_m)),
                    still_speed_mps=dict(zip(DETECTION_NAMES, model.detection_head.config.still_speed_mps)),
                    tracking=dataclasses.asdict(model.config.tracking))
        report = evaluation_report(detection, mr.segmentation.result(), mr.road.result(), meta)
        report["tracking"] = "not available (the model's tracker is off: model.tracking.enabled)"
        tracks = mr.tracks
    if tracks is not None:  # the tracker's tracks (or the file's) scored by the devkit
        path = write_submission(out / "results_tracking.json", complete_results(nusc, tracks, eval_set))
        report["tracking"] = run_tracking_eval(args.dataroot, args.version, path, eval_set, out / "tracking",
                                               max_range=args.max_range)
    report["meta"]["wall_s"] = round(time.perf_counter() - t0, 2)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(format_report(report))
    print(f"report: {out / 'report.json'}")
    return 0
