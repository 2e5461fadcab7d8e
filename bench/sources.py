"""Benchmark: the data sources. Log replay load rate, and whether the live vehicle keeps 12 Hz.

    python bench/sources.py            # live vehicle at 800x450 for 4 s; real scene-0523 keyframes
    python bench/sources.py --quick    # live vehicle at 160x90 for 1 s

1. Replay: NuScenesSource.frame_sets() on the real scene's 40 keyframe sets (six 1600x900 JPEGs
   each), in sets/s, against the plain devkit loop research code uses (nusc.get + PIL decode of the
   six images of each sample), measured in the same run: the ratio is the source's overhead.
2. Live: the simulated vehicle's production rate (world state + render, realtime=False) in images/s
   against the 72 images/s a 12 Hz six-camera rig needs; then a real-time run without pre-rendering:
   delivery delay (arrival - exposure timestamp) and pacing error (actual - scheduled delivery),
   medians and p99.
3. Live CPU: CPU time (this process, all threads) per 12 Hz six-camera cycle of the simulated vehicle
   (realtime=False, a fresh World per stream sharing the ground raster, so the traffic simulation
   is counted; a 1 s stream's CPU subtracted from a (1 + s) s one's to cancel the one-off costs), at 352x198 (the runtime.yaml default) and 800x450; median over repeats. Baseline in
   the same run: the per-capture path the vehicle used before (World.state_at + Renderer.render
   for every exposure). `--against REV` also measures the vehicle of git revision REV (exported to
   a temporary directory, run in a subprocess) for a true before/after.
Writes bench/results/sources.json.

    python bench/sources.py --live-cpu-only --against c4fa681~1   # just section 3, vs the old code
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# replay/ is imported inside the measuring functions, not here: `--against REV` imports this module in a
# subprocess and only then puts REV's exported replay/ first on the path, so the functions it calls
# must find that replay/ at call time (live_cpu_at_revision asserts they do).
from schema.messages import CAMERA_CHANNELS  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "nuscenes-real-scene-0523"


def replay_rates(repeats: int) -> dict:
    from replay.nuscenes.source import NuScenesSource

    src = NuScenesSource(REAL, "v1.0-trainval", keyframes_only=True)
    nusc = src.nusc

    def baseline() -> int:
        n = 0
        for s in nusc.sample:
            for ch in CAMERA_CHANNELS:
                sd = nusc.get("sample_data", s["data"][ch])
                np.asarray(Image.open(os.path.join(nusc.dataroot, sd["filename"])).convert("RGB"))
                nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
                nusc.get("ego_pose", sd["ego_pose_token"])
            n += 1
        return n

    def source() -> int:
        return sum(1 for _ in src.frame_sets())

    source()  # warm-up (plans the scene, fills the page cache)
    base, mine = [], []
    for _ in range(repeats):
        for fn, out in ((baseline, base), (source, mine)):
            t0 = time.perf_counter()
            n = fn()
            out.append(n / (time.perf_counter() - t0))
    return {"sets": 40, "baseline_sets_per_s": statistics.median(base), "source_sets_per_s": statistics.median(mine),
            "ratio": statistics.median(mine) / statistics.median(base)}


def live_rates(width: int, height: int, seconds: float) -> dict:
    from replay.sim.vehicle import SimulatedVehicle
    from replay.sim.world import World

    world = World(0)
    fast = SimulatedVehicle(seed=0, width=width, height=height, duration_s=1.0, realtime=False, world=world)
    list(fast.camera_frames())  # warm-up: ground raster, renderer caches
    t0 = time.perf_counter()
    n = sum(1 for _ in SimulatedVehicle(seed=0, width=width, height=height, duration_s=1.0, realtime=False,
                                         world=world).camera_frames())
    produce = n / (time.perf_counter() - t0)

    live = SimulatedVehicle(seed=0, width=width, height=height, duration_s=seconds, realtime=True, world=world)
    frames = list(live.camera_frames())
    delay = np.array([f.arrival_ns / 1e3 - f.timestamp_us for f in frames]) / 1e3
    s = live.stats
    return {"width": width, "height": height, "seconds": seconds, "images_per_s_produced": produce,
            "images_per_s_needed": 72.0, "ratio_vs_needed": produce / 72.0,
            "render_median_ms": float(np.median(s.render_ms)),
            "delivery_delay_median_ms": float(np.median(delay)), "delivery_delay_p99_ms": float(np.percentile(delay, 99)),
            "pacing_error_median_ms": s.pacing_median_ms, "pacing_error_p99_ms": s.pacing_p99_ms,
            "frames": len(frames)}


def _fresh_world(shared):
    """World(0) with the ground raster of `shared` (built once: it takes seconds and is not per cycle)."""
    from replay.sim.world import World

    w = World(0)
    w._raster = shared.ground
    return w


def live_cpu_vehicle(width: int, height: int, seconds: float, repeats: int) -> list[float]:
    """CPU ms per camera cycle of SimulatedVehicle(realtime=False, default render_ahead), one value per repeat.

    The CPU time of a whole stream of 1 s is subtracted from that of a stream of 1 + `seconds` s
    (fresh worlds both), so the one-off costs (renderer, camera caches, first frames) cancel out.
    """
    from replay.sim.vehicle import SimulatedVehicle
    from replay.sim.world import World

    shared = World(0)

    def stream_cpu(duration: float) -> float:
        v = SimulatedVehicle(seed=0, width=width, height=height, duration_s=duration, realtime=False,
                             world=_fresh_world(shared))
        c0 = time.process_time()
        n = sum(1 for _ in v.camera_frames())
        assert n == round(duration * 12) * 6, n
        return time.process_time() - c0

    stream_cpu(1.0)  # warm-up (JIT cache load)
    out = []
    for _ in range(repeats):
        short = stream_cpu(1.0)
        long = stream_cpu(1.0 + seconds)
        out.append((long - short) / (seconds * 12) * 1e3)
    return out


def live_cpu_baseline(width: int, height: int, seconds: float, repeats: int) -> list[float]:
    """CPU ms per cycle of the per-capture path: World.state_at + Renderer.render for each exposure."""
    from replay.sim.exposures import capture_times
    from replay.sim.render import Renderer
    from replay.sim.rig import camera_rig
    from replay.sim.world import World

    shared = World(0)
    rig = camera_rig(width, height)
    out = []
    for r in range(repeats + 1):
        world = _fresh_world(shared)
        renderer = Renderer(world, width, height)
        times = capture_times(rig, 0, seconds)
        renderer.render(world.state_at(0.0), rig[times[0][2]])
        c0 = time.process_time()
        for ts, _, ch in times:
            renderer.render(world.state_at(ts / 1e6), rig[ch])
        if r:
            out.append((time.process_time() - c0) / (len(times) / 6) * 1e3)
    return out


def _revision_tree(rev: str, tree: str) -> None:
    """Export replay/perception/runtime of git revision `rev` into directory `tree`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "replay", "perception", "runtime"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)


def live_cpu_at_revision(tree: str, width: int, height: int, seconds: float) -> float:
    """One live_cpu_vehicle value of the code exported in `tree`, in a subprocess."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import sources; "
            f"sys.path.insert(0, {tree!r}); import replay.sim.vehicle; assert replay.sim.vehicle.__file__.startswith({tree!r}); "
            f"print(sources.live_cpu_vehicle({width}, {height}, {seconds}, 1)[0])")
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tree)
    return float(res.stdout.strip().splitlines()[-1])


def live_cpu(sizes, seconds: float, repeats: int, against: str | None) -> dict:
    """Section 3; the measurements of each repeat are interleaved (vehicle, baseline, revision) so that
    the load of the shared machine weighs on them alike."""
    out = {}
    with tempfile.TemporaryDirectory() as tree:
        if against:
            _revision_tree(against, tree)
        for w, h in sizes:
            veh, base, old = [], [], []
            for _ in range(repeats):
                veh += live_cpu_vehicle(w, h, seconds, 1)
                base += live_cpu_baseline(w, h, seconds, 1)
                if against:
                    old.append(live_cpu_at_revision(tree, w, h, seconds))
            row = {"vehicle_cpu_ms_per_cycle": veh, "baseline_cpu_ms_per_cycle": base,
                   "vehicle_median": statistics.median(veh), "baseline_median": statistics.median(base),
                   "cores_at_12hz": statistics.median(veh) * 12 / 1e3}
            if against:
                row.update(revision=against, revision_cpu_ms_per_cycle=old, revision_median=statistics.median(old))
            out[f"{w}x{h}"] = row
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="live at 160x90 for 1 s, 1 replay repeat")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--live-cpu-only", action="store_true", help="only section 3 (live CPU per cycle)")
    parser.add_argument("--against", metavar="REV", help="also measure the live vehicle of this git revision")
    args = parser.parse_args()
    width = args.width or (160 if args.quick else 800)
    height = args.height or (90 if args.quick else 450)
    seconds = args.seconds or (1.0 if args.quick else 4.0)

    results: dict = {"config": {"quick": args.quick, "width": width, "height": height, "seconds": seconds,
                                "against": args.against},
                     "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    if (REAL / "v1.0-trainval").is_dir() and not args.live_cpu_only:
        results["replay"] = replay_rates(1 if args.quick else 3)
    if not args.live_cpu_only:
        results["live"] = live_rates(width, height, seconds)
    cpu_sizes = [(352, 198)] if args.quick else [(352, 198), (800, 450)]
    results["live_cpu"] = live_cpu(cpu_sizes, 2.0 if args.quick else 3.0, 3 if args.quick else 5, args.against)
    results["load_average_after"] = os.getloadavg()

    print(f"{'measure':44s} {'value':>12s}")
    if "replay" in results:
        r = results["replay"]
        print(f"{'replay: devkit loop (baseline), sets/s':44s} {r['baseline_sets_per_s']:12.2f}")
        print(f"{'replay: NuScenesSource, sets/s':44s} {r['source_sets_per_s']:12.2f}")
        print(f"{'replay: ratio source / baseline':44s} {r['ratio']:12.2f}")
    if "live" in results:
        lv = results["live"]
        print(f"{f'live {width}x{height}: images/s produced':44s} {lv['images_per_s_produced']:12.1f}")
        print(f"{'live: ratio vs the 72 images/s of 12 Hz':44s} {lv['ratio_vs_needed']:12.2f}")
        print(f"{'live: delivery delay median / p99 ms':44s} {lv['delivery_delay_median_ms']:6.1f} / {lv['delivery_delay_p99_ms']:.1f}")
        print(f"{'live: pacing error median / p99 ms':44s} {lv['pacing_error_median_ms']:6.1f} / {lv['pacing_error_p99_ms']:.1f}")
    for size, row in results["live_cpu"].items():
        print(f"{f'live CPU ms/cycle {size}: vehicle':44s} {row['vehicle_median']:12.1f}  ({row['cores_at_12hz']:.2f} core at 12 Hz)")
        print(f"{f'live CPU ms/cycle {size}: per-capture baseline':44s} {row['baseline_median']:12.1f}"
              f"  (x{row['baseline_median'] / row['vehicle_median']:.2f})")
        if "revision_median" in row:
            print(f"{f'live CPU ms/cycle {size}: vehicle at {args.against}':44s} {row['revision_median']:12.1f}"
                  f"  (x{row['revision_median'] / row['vehicle_median']:.2f})")
    la = results["load_average"][0], results["load_average_after"][0]
    print(f"{'load average (1 min) before / after':44s} {la[0]:6.1f} / {la[1]:.1f} on {os.cpu_count()} cores")
    out = ROOT / "bench" / "results" / "sources.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.live_cpu_only and out.exists():  # keep the other sections of the last full run
        previous = json.loads(out.read_text())
        results = {**previous, "live_cpu": results["live_cpu"], "live_cpu_config": results["config"],
                   "live_cpu_load_average": [results["load_average"], results["load_average_after"]]}
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
