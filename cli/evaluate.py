"""`bevstream eval`: score a model (or a results file) on a split: nuScenes detection and tracking, segmentation,
road geometry."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = ("Evaluate on a split: the devkit's DetectionEval (NDS, mAP, ...) and, with the tracker on, TrackingEval "
        "(AMOTA, ...), image segmentation and road-geometry metrics.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataroot", type=Path, default=None,
                        help="nuScenes-format dataroot (required, except with --streaming: the replay's)")
    parser.add_argument("--version", default=None, help="devkit table version (default v1.0-mini; with --streaming the replay's)")
    parser.add_argument("--split", default=None, help="'val', 'train' or a devkit split name such as mini_val "
                                                      "(default val; with --streaming the replay's, else val)")
    parser.add_argument("--streaming", type=Path, default=None, metavar="RUN",
                        help="a real-time replay's run directory: score its results_nusc.json (offline) beside its "
                             "streaming results without and with velocity compensation (docs/evaluation.md); with "
                             "--results, the offline column scores that file instead (an unpaced replay's)")
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
    parser.add_argument("--config", type=Path, default=None, help="runtime.yaml (model section, checkpoint; pipeline.scaled_decode)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from lab.devkit import eval_set_name
    from lab.evaluate import Split, score_model, score_results_file, score_streaming
    from lab.report import format_report, format_streaming
    from replay.nuscenes.clips import load_nusc
    from runtime.config import ConfigError, load_config, validate_model_options

    problem = _data_arguments(args) or _argument_problem(args)
    if problem:
        print(f"bevstream eval: {problem}", file=sys.stderr)
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
    split = Split(nusc, args.dataroot, args.version, eval_set, out, args.max_range)
    t0 = time.perf_counter()
    try:
        if args.streaming is not None:
            report = score_streaming(split, args.streaming, offline_results=args.results)
        elif args.results is not None:
            report = score_results_file(split, args.results, args.tracking_results)
        else:
            model, ckpt = _model(args, cfg)
            report = score_model(model, ckpt, split, args.scenes, args.keyframes_only, args.reset_every,
                                 progress=not args.no_progress, scaled_decode=cfg.pipeline.scaled_decode)
    except (FileNotFoundError, ValueError, json.JSONDecodeError) as exc:
        print(f"bevstream eval: {exc}", file=sys.stderr)
        return 2
    report["meta"]["wall_s"] = round(time.perf_counter() - t0, 2)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(format_streaming(report) if args.streaming is not None else format_report(report))
    print(f"report: {out / 'report.json'}")
    return 0


def _data_arguments(args: argparse.Namespace) -> str | None:
    """Fill --dataroot, --version and --split (with --streaming, from the replay's summary.json where not given);
    -> what is wrong, in one line, or None."""
    if args.streaming is not None:
        if args.tracking_results is not None:
            return "--streaming scores detection; it does not go with --tracking-results"
        from lab.streaming import run_summary

        try:
            source = run_summary(args.streaming).get("config", {}).get("source", {}).get("nuscenes", {})
        except (FileNotFoundError, ValueError) as exc:
            return str(exc)
        args.dataroot = args.dataroot or (Path(source["dataroot"]) if source.get("dataroot") else None)
        args.version, args.split = args.version or source.get("version"), args.split or source.get("split")
    args.version, args.split = args.version or "v1.0-mini", args.split or "val"
    if args.dataroot is None:
        return "--dataroot is required (or --streaming RUN of a replay whose summary.json names it)"
    return None


def _argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, in one line, or None."""
    if args.reset_every is not None and args.reset_every < 1:
        return f"--reset-every must be >= 1, got {args.reset_every}"
    if args.max_range is not None and not args.max_range > 0:
        return f"--max-range must be > 0 metres, got {args.max_range}"
    if args.tracking_results is not None and args.results is None:
        return "--tracking-results goes with --results (a model run scores its own tracks)"
    for path in (args.results, args.tracking_results):
        if path is not None and not path.is_file():
            return f"results file not found: {path}"
    checkpoint = args.checkpoint
    if args.results is None and checkpoint is not None and not checkpoint.exists():
        return f"checkpoint not found: {checkpoint}"
    return None


def _model(args: argparse.Namespace, cfg):
    """The model to score: the weights of --checkpoint, of the config, or the shipped ones; else random weights
    with a warning. -> (model in eval mode, the weights' path or None)."""
    import torch

    from perception.checkpoint import load_trained_model
    from perception.config import model_config_from_dict
    from perception.model import BEVStreamModel
    from runtime.model_adapter import random_weights_warning

    if args.threads:
        torch.set_num_threads(args.threads)
    ckpt = args.checkpoint if args.checkpoint is not None else cfg.model.resolved_checkpoint()
    if ckpt is not None and not Path(ckpt).exists():
        raise FileNotFoundError(f"checkpoint not found: {ckpt}")
    if ckpt is not None:
        model = load_trained_model(ckpt, cfg.model.options)
    else:
        print(random_weights_warning(), file=sys.stderr)
        model = BEVStreamModel(model_config_from_dict(cfg.model.options)).eval()
    print(f"bevstream eval: checkpoint {ckpt or 'none (random weights)'}", flush=True)
    return model, ckpt
