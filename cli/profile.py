"""`bevstream profile`: where each millisecond of a tick goes: per-stage and end-to-end latency
percentiles against the budgets of runtime.yaml, a Chrome/Perfetto trace of every tick, pictures, two
configurations compared (`--compare A.yaml B.yaml`), the op-level breakdown of the slowest model stage
(`--ops`). The work is in runtime/profiling/ and lab/profile_plots.py (docs/profiling.md)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli._common import _abs, add_common_arguments, add_model_arguments, load, warn_if_random_weights
from cli.stream import add_live_arguments, live_overrides, make_vehicle

HELP = "profile the runtime on the live simulated vehicle (or a replay): latency against budgets + Perfetto trace"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add_model_arguments(parser)
    add_live_arguments(parser)
    parser.add_argument("--ticks", type=int, default=None, metavar="N", help="measured ticks (profile.ticks)")
    parser.add_argument("--trace", default=None, metavar="FILE", help="trace JSON path (profile.trace)")
    parser.add_argument("--dataroot", default=None, metavar="DIR", help="profile a replay of this dataset instead")
    parser.add_argument("--version", default=None, metavar="VER")
    parser.add_argument("--scenes", nargs="+", default=None, metavar="SCENE")
    parser.add_argument("--no-plots", action="store_true", help="no PNGs (profile.plots: false)")
    parser.add_argument("--compare", nargs=2, default=None, metavar=("A.yaml", "B.yaml"),
                        help="profile two configurations one after the other on the same source; medians and B/A per stage")
    parser.add_argument("--ops", nargs="?", const="slowest", default=None, choices=("slowest", "backbone", "bev"),
                        help="then torch.profiler over a few calls of the slowest model stage (or the one named), in process")
    parser.add_argument("--ops-ticks", type=int, default=4, metavar="N", help="calls profiled by --ops (default 4)")


def _overrides(args: argparse.Namespace) -> dict:
    o = live_overrides(args)
    o.update({"profile.ticks": args.ticks, "profile.trace": _abs(args.trace), "profile.plots": False if args.no_plots else None,
              "source.nuscenes.dataroot": _abs(args.dataroot), "source.nuscenes.version": args.version,
              "source.nuscenes.scenes": args.scenes})
    return o


def make_source(cfg, dataroot: bool, realtime: bool = True):
    """The replay (--dataroot) or the live vehicle, streaming just long enough for the profile."""
    if dataroot:
        from replay.nuscenes.source import NuScenesSource

        n = cfg.source.nuscenes
        return NuScenesSource(n.dataroot, n.version, scenes=n.scenes, keyframes_only=n.keyframes_only, split=n.split)
    return make_vehicle(cfg, realtime=realtime)


def _profile(cfg, args, out_dir: Path, label: str = "", trace: Path | None = None):
    from runtime.profiling.session import format_run, profile_run, write_profile

    run = profile_run(cfg, make_source(cfg, bool(args.dataroot)), label=label, out_dir=out_dir)
    paths = write_profile(run, out_dir, trace)
    print(format_run(run))
    if cfg.profile.plots:
        from lab.profile_plots import profile_pngs

        pngs = profile_pngs(run.measured, run.live, out_dir, cfg.profile.deadline_ms)
        print("plots: " + ", ".join(str(p) for p in pngs))
    print(f"trace: {paths['trace']} (open at https://ui.perfetto.dev); summary: {paths['profile']}")
    return run


def _ops(run, args, out_dir: Path) -> None:
    from runtime.profiling.ops import op_breakdown, slowest_model_stage

    stage = slowest_model_stage(run.medians()) if args.ops == "slowest" else args.ops
    print(f"op breakdown of '{stage}' ({args.ops_ticks} calls, in this process on the actors' model; "
          "profiler on, so times are inflated: read the shares)", file=sys.stderr)
    source = make_source(run.cfg, bool(args.dataroot), realtime=False)
    table, rows = op_breakdown(run.cfg, source.frame_sets(), stage, args.ops_ticks, run.live)
    print(table)
    (out_dir / f"ops_{stage}.txt").write_text(table)
    (out_dir / f"ops_{stage}.json").write_text(json.dumps(rows, indent=2))
    print(f"ops: {out_dir / f'ops_{stage}.txt'}")


def _compare(args: argparse.Namespace, overrides: dict) -> int:
    from runtime.profiling.session import aligned_with, compare, format_comparison, sized_for_profile

    cfgs = [load(argparse.Namespace(**{**vars(args), "config": _abs(c)}), overrides) for c in args.compare]
    if None in cfgs:
        return 2
    a, b = cfgs[0], aligned_with(cfgs[0], cfgs[1])
    out = Path(a.output.out_dir)
    runs = []
    for label, cfg in (("A", a), ("B", b)):
        warn_if_random_weights(cfg)
        cfg = cfg if args.dataroot or args.seconds is not None else sized_for_profile(cfg)
        print(f"== {label}: {args.compare[len(runs)]}")
        runs.append(_profile(cfg, args, out / label, label, trace=out / label / "trace.json"))
    rows = compare(*runs)
    print("== compared (median ms over the measured ticks)")
    print(format_comparison(rows, *args.compare))
    (out / "compare.json").write_text(json.dumps({"a": args.compare[0], "b": args.compare[1], "stages": rows}, indent=2))
    return 0


def run(args: argparse.Namespace) -> int:
    overrides = _overrides(args)
    if args.ops_ticks < 1:
        print(f"bevstream: --ops-ticks must be >= 1, got {args.ops_ticks}", file=sys.stderr)
        return 2
    if args.compare and args.ops:
        print("bevstream: --ops profiles one configuration's model; run it without --compare", file=sys.stderr)
        return 2
    if args.compare:
        return _compare(args, overrides)
    cfg = load(args, overrides)
    if cfg is None:
        return 2
    warn_if_random_weights(cfg)
    from runtime.profiling.session import sized_for_profile

    if not args.dataroot and args.seconds is None:  # enough frames for the warm-up and the measured ticks
        cfg = sized_for_profile(cfg)
    out_dir = Path(cfg.output.out_dir)
    run_ = _profile(cfg, args, out_dir)
    if args.ops:
        _ops(run_, args, out_dir)
    return 0
