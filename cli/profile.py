"""`bevstream profile`: where each millisecond of a tick goes: per-stage and end-to-end latency
percentiles, deadline misses, and a Chrome/Perfetto trace of every tick."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli._common import _abs, add_common_arguments, add_model_arguments, load, warn_if_random_weights
from cli.stream import add_live_arguments, live_overrides, make_vehicle

HELP = "profile the runtime on the live simulated vehicle (or a replay): latency percentiles + Perfetto trace"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    add_model_arguments(parser)
    add_live_arguments(parser)
    parser.add_argument("--ticks", type=int, default=None, metavar="N", help="measured ticks (profile.ticks)")
    parser.add_argument("--trace", default=None, metavar="FILE", help="trace JSON path (profile.trace)")
    parser.add_argument("--dataroot", default=None, metavar="DIR", help="profile a replay of this dataset instead")
    parser.add_argument("--version", default=None, metavar="VER")
    parser.add_argument("--scenes", nargs="+", default=None, metavar="SCENE")


def run(args: argparse.Namespace) -> int:
    overrides = live_overrides(args)
    overrides.update({
        "profile.ticks": args.ticks,
        "profile.trace": _abs(args.trace),
        "source.nuscenes.dataroot": _abs(args.dataroot),
        "source.nuscenes.version": args.version,
        "source.nuscenes.scenes": args.scenes,
    })
    cfg = load(args, overrides)
    if cfg is None:
        return 2
    warn_if_random_weights(cfg)
    p = cfg.profile
    if args.dataroot:
        from replay.nuscenes.source import NuScenesSource

        n = cfg.source.nuscenes
        source = NuScenesSource(n.dataroot, n.version, scenes=n.scenes, keyframes_only=n.keyframes_only, split=n.split)
    else:
        if args.seconds is None:  # enough frames for the warm-up and the measured ticks
            cfg = cfg.model_copy(update={"source": cfg.source.model_copy(update={
                "live": cfg.source.live.model_copy(update={"duration_s": (p.ticks + p.warmup) / cfg.source.live.rate_hz})})})
        source = make_vehicle(cfg)
    from tqdm import tqdm

    from runtime.api import Runtime
    from runtime.profiling import write_trace
    from runtime.report import RunReport

    live = bool(source.is_live)
    print(f"source: {source.describe()}", file=sys.stderr)
    records = []
    out_dir = Path(cfg.output.out_dir)
    with Runtime(cfg) as rt:
        print(f"actors: {rt.placement()}", file=sys.stderr)
        with tqdm(unit="tick", disable=not cfg.output.progress, file=sys.stderr) as bar:
            for record in rt.iterate(source, out_dir=out_dir):
                records.append(record)
                bar.update(1)
                if len(records) >= p.ticks + p.warmup and not live:
                    break
    measured = RunReport(live, deadline_ms=p.deadline_ms)
    for r in sorted(records, key=lambda r: r.frame_id)[p.warmup:]:
        measured.add(r)
    trace = write_trace(p.trace, records, live)
    print(f"profile of {measured.total} frame sets after {p.warmup} warm-up:")
    print(measured.format())
    (out_dir / "profile.json").write_text(json.dumps(measured.summary(), indent=2))
    print(f"trace: {trace} (open at https://ui.perfetto.dev); summary: {out_dir / 'profile.json'}")
    return 0
