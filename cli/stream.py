"""`bevstream stream`: the live simulated vehicle through the runtime in real time."""
from __future__ import annotations

import argparse
from pathlib import Path

from cli._common import add_common_arguments, add_model_arguments, add_faults_argument, parse_faults_arg, add_record_argument, load, make_recorder, run_source, warn_if_random_weights

HELP = "stream the simulated vehicle's six cameras through the runtime in real time"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add_model_arguments(parser)
    add_live_arguments(parser)
    add_record_argument(parser)
    add_faults_argument(parser)


def add_live_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=None, metavar="N", help="stream duration (source.live.duration_s)")
    parser.add_argument("--rate", type=float, default=None, metavar="HZ", help="camera rate (source.live.rate_hz)")
    parser.add_argument("--seed", type=int, default=None, help="world seed (source.live.seed)")


def live_overrides(args: argparse.Namespace) -> dict:
    return {"source.live.duration_s": args.seconds, "source.live.rate_hz": args.rate, "source.live.seed": args.seed}


def make_vehicle(cfg, realtime: bool = True):
    from replay.sim.vehicle import SimulatedVehicle

    v = cfg.source.live
    return SimulatedVehicle(seed=v.seed, width=v.width, height=v.height, rate_hz=v.rate_hz, duration_s=v.duration_s,
                            jitter_ms=v.jitter_ms, late_prob=v.late_prob, drop_prob=v.drop_prob, realtime=realtime)


def run(args: argparse.Namespace) -> int:
    faults = parse_faults_arg(args)
    if faults is False:
        return 2
    overrides = live_overrides(args)
    if args.record:  # the recorder sees the cameras in this process: the source runs in a driver thread
        overrides["pipeline.live_ingest"] = "thread"
    cfg = load(args, overrides)
    if cfg is None:
        return 2
    warn_if_random_weights(cfg)
    source = make_vehicle(cfg)
    total = int(cfg.source.live.duration_s * cfg.source.live.rate_hz)
    out_dir = Path(cfg.output.out_dir)
    recorder = make_recorder(out_dir, live=True) if args.record else None
    run_source(cfg, source, out_dir, total=total, recorder=recorder, faults=faults, fault_seed=args.fault_seed)
    return 0
