"""Benchmark: wall time of `bevstream sim` (the nuScenes-format exporter) and its image throughput.

    python bench/export.py            # 10 scenes x 20 s at 800x450, 2 workers (the README figure)
    python bench/export.py --quick    # 2 scenes x 4 s at 320x180

Baseline measured in the same run: rendering alone (Renderer.render on the same world, one
process, no encoding or tables), in camera images per second. The ratio export/render throughput
shows what the exporter adds on top of rendering (JPEG + label PNG encoding, visibility, lidar
counts, tables) and what the parallel scene workers win back. Writes bench/results/export.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the repository's packages, importable once ROOT is on the path (run as `python bench/export.py`)
from replay.export.dataset import ExportConfig, export_dataset, scene_seed, scene_start_us  # noqa: E402
from replay.sim.exposures import iter_captures  # noqa: E402
from replay.sim.render import Renderer  # noqa: E402
from replay.sim.rig import camera_rig  # noqa: E402
from replay.sim.world import World  # noqa: E402


def render_rate(width: int, height: int, frames: int, repeats: int) -> float:
    """Median camera images per second of Renderer.render alone (after one warm-up frame)."""
    world = World(scene_seed(0, 0))
    rig = camera_rig(width, height)
    renderer = Renderer(world, width, height)
    caps = []
    for cap in iter_captures(world, rig, scene_start_us(0), frames / 72.0 + 0.2):
        caps.append(cap)
        if len(caps) >= frames:
            break
    renderer.render(caps[0].state, rig[caps[0].channel])  # warm-up
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for cap in caps:
            renderer.render(cap.state, rig[cap.channel])
        rates.append(len(caps) / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 scenes x 4 s at 320x180")
    parser.add_argument("--scenes", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="export runs to take the median of")
    args = parser.parse_args()
    scenes = args.scenes or (2 if args.quick else 10)
    duration = args.duration or (4.0 if args.quick else 20.0)
    width = args.width or (320 if args.quick else 800)
    height = args.height or (180 if args.quick else 450)

    # Warm-up: a one-scene, one-second export (imports, first-use caches) that is not timed.
    with tempfile.TemporaryDirectory() as tmp:
        export_dataset(ExportConfig(out=Path(tmp) / "warm", scenes=1, width=width, height=height, duration_s=1.0, workers=1))
    base = render_rate(width, height, frames=36 if args.quick else 72, repeats=3)

    times, summary = [], None
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = ExportConfig(out=Path(tmp) / "sim", scenes=scenes, width=width, height=height,
                               duration_s=duration, workers=args.workers)
            t0 = time.perf_counter()
            summary = export_dataset(cfg)
            times.append(time.perf_counter() - t0)
            size_mb = sum(p.stat().st_size for p in Path(cfg.out).rglob("*") if p.is_file()) / 1e6
    wall = statistics.median(times)
    export_rate = summary.camera_images / wall
    rows = [
        ("export wall time (s)", f"{wall:.1f}"),
        ("camera images written", f"{summary.camera_images}"),
        ("annotations", f"{summary.annotations}"),
        ("dataset size (MB)", f"{size_mb:.0f}"),
        ("export throughput (images/s)", f"{export_rate:.1f}"),
        ("baseline: render only, 1 process (images/s)", f"{base:.1f}"),
        ("ratio export / render-only", f"{export_rate / base:.2f}"),
    ]
    print(f"bevstream sim: {scenes} scenes x {duration:g} s at {width}x{height}, {args.workers} workers, {os.cpu_count()} cores")
    for k, v in rows:
        print(f"  {k:<45} {v:>10}")
    out = ROOT / "bench" / "results" / "export.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "command": "python bench/export.py" + (" --quick" if args.quick else ""),
        "config": {"scenes": scenes, "duration_s": duration, "width": width, "height": height,
                   "workers": args.workers, "repeats": args.repeats, "version": "v1.0-mini"},
        "cores": os.cpu_count(),
        "export_wall_s": round(wall, 2),
        "export_wall_s_all": [round(t, 2) for t in times],
        "camera_images": summary.camera_images,
        "samples": summary.samples,
        "annotations": summary.annotations,
        "dataset_mb": round(size_mb, 1),
        "export_images_per_s": round(export_rate, 2),
        "render_only_images_per_s": round(base, 2),
        "ratio_export_vs_render_only": round(export_rate / base, 3),
    }, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
