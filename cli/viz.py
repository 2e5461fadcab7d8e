"""`bevstream viz`: pictures of what a replay run saw and said.

A run's ticks.jsonl holds the results but not the images, so the images are read again from the
dataroot the run replayed; keyframe ticks are matched by their sample token.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "draw pictures (or, with --video, an MP4) of a replay run: cameras with its 3D boxes, BEV with boxes and road lines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="RUN", help="run directory of `bevstream replay` (has ticks.jsonl)")
    parser.add_argument("--dataroot", required=True, metavar="DIR", help="the dataroot the run replayed")
    parser.add_argument("--version", default="v1.0-mini", metavar="VER", help="devkit table version (default v1.0-mini)")
    parser.add_argument("--pictures", type=int, default=4, metavar="N", help="keyframe ticks to draw, evenly spaced (default 4)")
    parser.add_argument("--min-score", type=float, default=None, metavar="S",
                        help="draw boxes scoring at least S (default lab.viz.DRAW_MIN_SCORE, 0.3)")
    parser.add_argument("--out", default=None, metavar="DIR", help="where the PNGs go (default RUN/pictures)")
    parser.add_argument("--video", action="store_true",
                        help="instead of pictures, write RUN/scene.mp4: every tick as cameras + BEV (lab/video.py)")
    parser.add_argument("--fps", type=float, default=None, metavar="HZ",
                        help="video frame rate (default: the run's own tick rate in sensor time)")


def read_keyframe_ticks(ticks_path: Path) -> list[dict]:
    """The tick lines of a ticks.jsonl that belong to a keyframe sample, in file order."""
    lines = []
    with open(ticks_path) as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "tick" and record.get("sample_token"):
                lines.append(record)
    return lines


def evenly_spaced(items: list, count: int) -> list:
    if count <= 0 or not items:
        return []
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def run_video(args: argparse.Namespace, ticks_path: Path) -> int:
    """`viz --video`: every tick of the run, in order, as one MP4 frame."""
    from lab.video import composite, fps_of, read_ticks, run_frames, write_video
    from lab.viz import DRAW_MIN_SCORE
    from replay.nuscenes.source import NuScenesSource

    ticks = read_ticks(ticks_path)
    if not ticks:
        print(f"bevstream viz: {ticks_path} has no tick to draw", file=sys.stderr)
        return 2
    keyframes_only = all(t.sample_token for t in ticks)  # then the sweeps need not be read
    try:
        source = NuScenesSource(args.dataroot, args.version, scenes=sorted({t.scene for t in ticks}),
                                keyframes_only=keyframes_only)
    except (FileNotFoundError, ValueError) as exc:
        print(f"bevstream viz: {exc}", file=sys.stderr)
        return 2
    min_score = DRAW_MIN_SCORE if args.min_score is None else args.min_score
    out = Path(args.out) / "scene.mp4" if args.out else Path(args.run) / "scene.mp4"
    frames = (composite(fs, result, min_score) for fs, result in run_frames(ticks, source.frame_sets()))
    fps = args.fps or fps_of(ticks)
    count = write_video(frames, out, fps)
    if count < len(ticks):
        print(f"bevstream viz: {len(ticks) - count} tick(s) of the run are not in {args.dataroot}", file=sys.stderr)
    print(f"bevstream viz: {out} ({count} frames at {fps:g} fps)", file=sys.stderr)
    return 0 if count else 1


def run(args: argparse.Namespace) -> int:
    ticks_path = Path(args.run) / "ticks.jsonl"
    if not ticks_path.is_file():
        print(f"bevstream viz: {ticks_path} not found (is --run a `bevstream replay` run directory?)", file=sys.stderr)
        return 2
    if args.video:
        return run_video(args, ticks_path)
    chosen = evenly_spaced(read_keyframe_ticks(ticks_path), args.pictures)
    if not chosen:
        print(f"bevstream viz: {ticks_path} has no keyframe tick to draw", file=sys.stderr)
        return 2

    from replay.nuscenes.source import NuScenesSource
    from schema.results import TickResult
    from lab.viz import DRAW_MIN_SCORE, draw_bev, draw_cameras

    min_score = DRAW_MIN_SCORE if args.min_score is None else args.min_score

    by_sample = {r["sample_token"]: TickResult.from_json(r) for r in chosen}
    scenes = sorted({r["scene"] for r in chosen})
    try:
        source = NuScenesSource(args.dataroot, args.version, scenes=scenes, keyframes_only=True)
    except (FileNotFoundError, ValueError) as exc:
        print(f"bevstream viz: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.out) if args.out else Path(args.run) / "pictures"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for frame_set in source.frame_sets():
        result = by_sample.pop(frame_set.sample_token, None)
        if result is None:
            continue
        stem = f"{result.scene}_{result.frame_id:05d}"
        draw_cameras(frame_set, result, min_score=min_score).save(out_dir / f"{stem}_cameras.png")
        draw_bev(result, min_score=min_score).save(out_dir / f"{stem}_bev.png")
        written.append(stem)
        if not by_sample:
            break
    if by_sample:
        print(f"bevstream viz: {len(by_sample)} sample(s) of the run are not in {args.dataroot}", file=sys.stderr)
    print(f"bevstream viz: {2 * len(written)} pictures in {out_dir}", file=sys.stderr)
    return 0 if written else 1
