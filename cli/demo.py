"""`bevstream demo`: the simulated vehicle through the runtime with the shipped weights; leaves the
run's outputs and a few pictures (cameras with projected boxes, BEV with boxes and road lines) in
runs/demo/."""
from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

from cli._common import add_common_arguments, load, run_source, warn_if_random_weights
from cli.stream import add_live_arguments, live_overrides, make_vehicle

HELP = "run the simulated vehicle with the shipped weights; outputs and pictures in runs/demo/"
DEFAULT_OUT = "runs/demo"


class _KeepLastSets:
    """A live source wrapper that synchronises the vehicle's frames and keeps the last few sets (for pictures)."""

    is_live = True

    def __init__(self, vehicle, cfg, keep: int = 48):
        self.vehicle, self.cfg, self.keep = vehicle, cfg, keep
        self.sets: OrderedDict[int, object] = OrderedDict()

    def frame_sets(self):
        from replay.sync import make_synchronizer
        from replay.sync import synchronize

        sync = make_synchronizer(self.vehicle, tolerance_us=int(self.cfg.sync.tolerance_ms * 1000),
                                 max_wait_us=int(self.cfg.sync.max_wait_ms * 1000))
        for fs in synchronize(self.vehicle.camera_frames(), sync):
            self.sets[fs.frame_id] = fs
            while len(self.sets) > self.keep:
                self.sets.popitem(last=False)
            yield fs

    def describe(self) -> str:
        return self.vehicle.describe()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, out_default=DEFAULT_OUT)
    add_live_arguments(parser)
    parser.add_argument("--pictures", type=int, default=3, metavar="N", help="ticks to draw (default 3)")


def run(args: argparse.Namespace) -> int:
    overrides = live_overrides(args)
    if args.seconds is None:
        overrides["source.live.duration_s"] = 6.0
    overrides["pipeline.live_ingest"] = "thread"  # the pictures need the images in this process
    cfg = load(args, overrides)
    if cfg is None:
        return 2
    warn_if_random_weights(cfg)
    from lab.viz import draw_bev, draw_cameras

    out_dir = Path(cfg.output.out_dir)
    source = _KeepLastSets(make_vehicle(cfg), cfg)
    picked = []  # (frame set, result) of the last ticks with their images still kept

    def keep(record) -> None:
        if record.kind == "tick" and record.frame_id in source.sets:
            picked.append((source.sets[record.frame_id], record))
            del picked[:-args.pictures * 4]

    total = int(cfg.source.live.duration_s * cfg.source.live.rate_hz)
    run_source(cfg, source, out_dir, total=total, on_record=keep)
    step = max(1, len(picked) // max(args.pictures, 1))
    written = []
    for fs, result in picked[::step][-args.pictures:]:
        cams = out_dir / f"frame_{result.frame_id:05d}_cameras.png"
        bev = out_dir / f"frame_{result.frame_id:05d}_bev.png"
        draw_cameras(fs, result).save(cams)
        draw_bev(result).save(bev)
        written += [cams.name, bev.name]
    print(f"pictures in {out_dir}: {', '.join(written) if written else 'none (no tick finished)'}", file=sys.stderr)
    return 0
