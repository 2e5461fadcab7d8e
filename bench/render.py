"""Benchmark: simulated camera images rendered per second (and the world and lidar costs beside it).

    python bench/render.py            # 4 s of driving (288 images) at 800x450
    python bench/render.py --quick    # 1 s of driving (72 images) at 800x450

Renders every capture of a simulated drive with Renderer.render, timing each call, and reports the
median per image (images/s = 1 / median) and the whole-loop throughput. Baseline measured in the
same run: the slow numpy reference caster (render_labels_reference: float64, every box against
every pixel) at 200x112, compared per pixel. Also times World.state_at per cycle and one lidar
sweep. Other engineers share the 2 cores, so the load average is recorded before and after, and
the CPU time of this process per image (what one free core would take) is reported beside wall time.
Writes bench/results/render.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the repository's packages, importable once ROOT is on the path (run as `python bench/render.py`)
from replay.sim.exposures import Capture, iter_captures  # noqa: E402
from replay.sim.lidar import lidar_point_counts  # noqa: E402
from replay.sim.render import Renderer, render_labels_reference  # noqa: E402
from replay.sim.rig import camera_rig, lidar_calibration  # noqa: E402
from replay.sim.world import World  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s of driving instead of 4 s")
    parser.add_argument("--width", type=int, default=800)
    parser.add_argument("--height", type=int, default=450)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def time_world_build(seed: int) -> tuple[World, float, float]:
    """The world, the seconds to build it (roads, traffic) and to build its ground raster."""
    t0 = time.perf_counter()
    world = World(seed)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _ = world.ground
    return world, build_s, time.perf_counter() - t0


def time_renders(renderer: Renderer, rig: dict, caps: list[Capture]) -> tuple[list[float], list[float], float]:
    """Wall and CPU seconds of each Renderer.render call over the captures (after a warm-up per camera),
    and the whole loop's wall seconds."""
    for ch, cal in rig.items():  # warm-up: JIT load and per-camera caches
        renderer.render(caps[0].state, cal)
    times, cpu = [], []
    t_loop = time.perf_counter()
    for cap in caps:
        t0, c0 = time.perf_counter(), time.process_time()
        renderer.render(cap.state, rig[cap.channel])
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu, time.perf_counter() - t_loop


def time_lidar(world: World, caps: list[Capture]) -> list[float]:
    """Seconds per lidar sweep at about a dozen captures spread over the drive (after a warm-up)."""
    lidar = lidar_calibration()
    lidar_point_counts(world, caps[0].state, lidar)  # warm-up
    lid = []
    for cap in caps[:: max(1, len(caps) // 12)]:
        t0 = time.perf_counter()
        lidar_point_counts(world, cap.state, lidar)
        lid.append(time.perf_counter() - t0)
    return lid


def reference_px_per_s(world: World, caps: list[Capture], quick: bool) -> float:
    """Baseline: pixels per second of the slow numpy reference caster at 200x112 (median over a few captures)."""
    small_w, small_h = 200, 112
    small = Renderer(world, small_w, small_h)
    small_rig = camera_rig(small_w, small_h)
    ref = []
    for cap in caps[:2 if quick else 3]:
        t0 = time.perf_counter()
        render_labels_reference(small, cap.state, small_rig[cap.channel])
        ref.append(time.perf_counter() - t0)
    return small_w * small_h / statistics.median(ref)


def print_rows(args: argparse.Namespace, result: dict) -> None:
    """The result as an aligned two-column table."""
    med, cpu_med = result["render_ms_median"] / 1e3, result["render_cpu_ms_median"] / 1e3
    ref_px_s, px_s = result["baseline_reference_px_per_s"], result["render_px_per_s"]
    load_before, load_after = result["load_avg_1min"]["before"], result["load_avg_1min"]["after"]
    rows = [
        ("world build (roads, traffic)", f"{result['world_build_s']:.2f} s"),
        ("ground raster build", f"{result['raster_build_s']:.2f} s"),
        ("World.state_at per image", f"{result['state_at_ms_per_image']:.2f} ms"),
        (f"render {args.width}x{args.height} median", f"{med * 1e3:.1f} ms  ({1 / med:.1f} images/s)"),
        ("render p90", f"{result['render_ms_p90']:.1f} ms"),
        ("render loop throughput", f"{result['images_per_s_loop']:.1f} images/s"),
        ("render CPU time median (this process)", f"{cpu_med * 1e3:.1f} ms  ({result['images_per_s_cpu_time']:.1f} images/s per free core)"),
        ("lidar sweep median", f"{result['lidar_ms_median']:.1f} ms"),
        ("baseline: numpy reference", f"{ref_px_s / 1e6:.3f} Mpx/s"),
        ("renderer", f"{px_s / 1e6:.2f} Mpx/s  (x{result['speedup_vs_reference']:.0f} vs reference)"),
        ("load average (1 min) before/after", f"{load_before:.1f} / {load_after:.1f} on {os.cpu_count()} cores"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, val in rows:
        print(f"{name:<{width}}  {val}")


def main() -> int:
    args = parse_args()
    load_before = os.getloadavg()
    world, build_s, raster_s = time_world_build(args.seed)
    rig = camera_rig(args.width, args.height)
    renderer = Renderer(world, args.width, args.height)
    duration = 1.0 if args.quick else 4.0

    # world states per cycle (the simulation cost, separate from rendering)
    t0 = time.perf_counter()
    caps = list(iter_captures(world, rig, 1_000_000, duration))
    state_ms = (time.perf_counter() - t0) / len(caps) * 1e3

    times, cpu, loop_s = time_renders(renderer, rig, caps)
    med = statistics.median(times)
    cpu_med = statistics.median(cpu)
    lid = time_lidar(world, caps)
    ref_px_s = reference_px_per_s(world, caps, args.quick)
    px_s = args.width * args.height / med
    load_after = os.getloadavg()

    result = {
        "config": {"width": args.width, "height": args.height, "seed": args.seed, "images": len(caps),
                   "duration_s": duration, "cores": os.cpu_count(), "quick": args.quick},
        "load_avg_1min": {"before": load_before[0], "after": load_after[0]},
        "world_build_s": build_s,
        "raster_build_s": raster_s,
        "state_at_ms_per_image": state_ms,
        "render_ms_median": med * 1e3,
        "render_ms_p90": sorted(times)[int(0.9 * (len(times) - 1))] * 1e3,
        "images_per_s_median": 1.0 / med,
        "images_per_s_loop": len(caps) / loop_s,
        "render_cpu_ms_median": cpu_med * 1e3,
        "images_per_s_cpu_time": 1.0 / cpu_med if cpu_med > 0 else None,
        "lidar_ms_median": statistics.median(lid) * 1e3,
        "baseline_reference_px_per_s": ref_px_s,
        "render_px_per_s": px_s,
        "speedup_vs_reference": px_s / ref_px_s,
    }
    print_rows(args, result)
    out = ROOT / "bench" / "results" / "render.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
