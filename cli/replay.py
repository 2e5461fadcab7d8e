"""`bevstream replay`: a nuScenes-format log through the runtime, tick by tick, into a run directory."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli._common import _abs, add_common_arguments, add_model_arguments, add_faults_argument, parse_faults_arg, add_record_argument, load, make_recorder, run_source, warn_if_random_weights

HELP = ("replay a nuScenes-format log through the runtime; writes results_nusc.json, ticks.jsonl, summary.json "
        "(and with --realtime results_streaming.json)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add_model_arguments(parser, short_names=True)
    parser.add_argument("--dataroot", default=None, metavar="DIR", help="dataset root (source.nuscenes.dataroot)")
    parser.add_argument("--version", default=None, metavar="VER", help="table version, e.g. v1.0-mini")
    parser.add_argument("--split", default=None, help="devkit split name, e.g. mini_val")
    parser.add_argument("--scenes", nargs="+", default=None, metavar="SCENE", help="scene names")
    parser.add_argument("--keyframes-only", action="store_true", default=None, help="2 Hz keyframes only")
    parser.add_argument("--realtime", action="store_true", default=None, help="pace by the log's timestamps")
    parser.add_argument("--compensate", choices=("none", "velocity"), default="none",
                        help="with --realtime: results_streaming.json moves each box by its velocity x its age "
                             "(ASAP's -Sv baseline; default none)")
    add_record_argument(parser)
    add_faults_argument(parser)


def scene_sample_tokens(nusc, scene_records) -> list[str]:
    """Every keyframe sample of the scenes, in order: each must appear in results_nusc.json."""
    tokens = []
    for scene in scene_records:
        token = scene["first_sample_token"]
        while token:
            tokens.append(token)
            token = nusc.get("sample", token)["next"]
    return tokens


def recording_hooks(source) -> dict:
    """The replay's extras for `--record`: each camera's original JPEG from the dataroot (nothing re-encoded),
    and the devkit's annotations of each keyframe as ground truth (global frame)."""
    import numpy as np
    from nuscenes.eval.detection.utils import category_to_detection_name
    from pyquaternion import Quaternion

    nusc, root = source.nusc, Path(source.dataroot)

    def jpeg_bytes(frame) -> bytes | None:
        if frame.sample_data_token is None:
            return None
        return (root / nusc.get("sample_data", frame.sample_data_token)["filename"]).read_bytes()

    def ground_truth(frame_set):
        if frame_set.sample_token is None:
            return None
        boxes, names = [], []
        for token in nusc.get("sample", frame_set.sample_token)["anns"]:
            ann = nusc.get("sample_annotation", token)
            name = category_to_detection_name(ann["category_name"])
            if name is None:
                continue
            yaw = Quaternion(ann["rotation"]).yaw_pitch_roll[0]
            boxes.append([*ann["translation"], *ann["size"], yaw, 0.0, 0.0])
            names.append(name)
        return np.asarray(boxes, np.float64).reshape(-1, 9), names

    return {"jpeg_bytes": jpeg_bytes, "ground_truth": ground_truth}


def run(args: argparse.Namespace) -> int:
    faults = parse_faults_arg(args)
    if faults is False:
        return 2
    cfg = load(args, {
        "source.nuscenes.dataroot": _abs(args.dataroot),
        "source.nuscenes.version": args.version,
        "source.nuscenes.split": args.split,
        "source.nuscenes.scenes": args.scenes,
        "source.nuscenes.keyframes_only": args.keyframes_only,
        "source.nuscenes.realtime": args.realtime,
    })
    if cfg is None:
        return 2
    if args.compensate != "none" and not cfg.source.nuscenes.realtime:
        print("bevstream: --compensate needs --realtime (streaming results come from a paced replay)", file=sys.stderr)
        return 2
    from runtime.config import ConfigError

    try:
        dataroot = cfg.require_dataroot()
    except ConfigError as exc:
        print(f"bevstream: config error: {exc}", file=sys.stderr)
        return 2
    warn_if_random_weights(cfg)
    from replay.nuscenes.source import NuScenesSource

    n = cfg.source.nuscenes
    try:
        source = NuScenesSource(dataroot, n.version, scenes=n.scenes, keyframes_only=n.keyframes_only,
                                realtime=n.realtime, speed=n.speed, skip_late=n.skip_late, split=n.split)
    except (FileNotFoundError, ValueError) as exc:
        print(f"bevstream: {exc}", file=sys.stderr)
        return 2
    expected = scene_sample_tokens(source.nusc, source.scene_records)
    out_dir = Path(cfg.output.out_dir)
    recorder = make_recorder(out_dir, live=False, **recording_hooks(source)) if args.record else None
    run_source(cfg, source, out_dir, expected_samples=expected, total=len(source), recorder=recorder,
               faults=faults, fault_seed=args.fault_seed)
    write_streaming_results(out_dir, source.nusc, n.realtime, args.compensate, cfg.output.submission_max_boxes)
    return 0


def write_streaming_results(out_dir: Path, nusc, realtime: bool, compensate: str, max_boxes: int) -> None:
    """A paced replay's results_streaming.json (lab.streaming); otherwise an earlier run's is removed, so it
    cannot pass for this one's."""
    from lab.streaming import STREAMING_RECORD, STREAMING_RESULTS, write_streaming

    if not realtime:
        for name in (STREAMING_RESULTS, STREAMING_RECORD):
            (out_dir / name).unlink(missing_ok=True)
        return
    record = write_streaming(out_dir, nusc, compensate, max_boxes)
    age = record["age_ms"]
    print(f"wrote {out_dir}/{STREAMING_RESULTS} (compensate {compensate}): {record['samples']} samples, "
          f"{record['empty_samples']} before the first delivered tick"
          + (f", output age p50 {age['p50']:.0f} ms, p99 {age['p99']:.0f} ms" if age else ""))
