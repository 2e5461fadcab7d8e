"""Benchmark: the data sources. Log replay load rate, and whether the live vehicle keeps 12 Hz.

    python bench/sources.py            # live vehicle at 800x450 for 4 s; real scene-0523 keyframes
    python bench/sources.py --quick    # live vehicle at 160x90 for 1 s

1. Replay: NuScenesSource.frame_sets() on the real scene's 40 keyframe sets (six 1600x900 JPEGs
   each), in sets/s, against the plain devkit loop research code uses (nusc.get + PIL decode of the
   six images of each sample), measured in the same run: the ratio is the source's overhead.
2. Live: the simulated vehicle's production rate (world state + render, realtime=False) in images/s
   against the 72 images/s a 12 Hz six-camera rig needs; then a real-time run without pre-rendering:
   delivery delay (arrival - exposure timestamp) and pacing error (actual - scheduled delivery),
   medians and p99. Writes bench/results/sources.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REAL = ROOT.parent / "shared" / "data" / "nuscenes-real-scene-0523"


def replay_rates(repeats: int) -> dict:
    from PIL import Image

    from replay.nuscenes_source import NuScenesSource
    from runtime.messages import CAMERA_CHANNELS

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
    from replay.live import SimulatedVehicle
    from replay.world import World

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="live at 160x90 for 1 s, 1 replay repeat")
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--seconds", type=float)
    args = parser.parse_args()
    width = args.width or (160 if args.quick else 800)
    height = args.height or (90 if args.quick else 450)
    seconds = args.seconds or (1.0 if args.quick else 4.0)

    results: dict = {"config": {"quick": args.quick, "width": width, "height": height, "seconds": seconds},
                     "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    if (REAL / "v1.0-trainval").is_dir():
        results["replay"] = replay_rates(1 if args.quick else 3)
    results["live"] = live_rates(width, height, seconds)

    print(f"{'measure':44s} {'value':>12s}")
    if "replay" in results:
        r = results["replay"]
        print(f"{'replay: devkit loop (baseline), sets/s':44s} {r['baseline_sets_per_s']:12.2f}")
        print(f"{'replay: NuScenesSource, sets/s':44s} {r['source_sets_per_s']:12.2f}")
        print(f"{'replay: ratio source / baseline':44s} {r['ratio']:12.2f}")
    lv = results["live"]
    print(f"{f'live {width}x{height}: images/s produced':44s} {lv['images_per_s_produced']:12.1f}")
    print(f"{'live: ratio vs the 72 images/s of 12 Hz':44s} {lv['ratio_vs_needed']:12.2f}")
    print(f"{'live: delivery delay median / p99 ms':44s} {lv['delivery_delay_median_ms']:6.1f} / {lv['delivery_delay_p99_ms']:.1f}")
    print(f"{'live: pacing error median / p99 ms':44s} {lv['pacing_error_median_ms']:6.1f} / {lv['pacing_error_p99_ms']:.1f}")
    out = ROOT / "bench" / "results" / "sources.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
