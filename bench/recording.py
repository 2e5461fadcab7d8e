"""Benchmark: what `--record` (runtime/recording.py, the Foxglove recording) costs a replay.

    python bench/recording.py            # real scene-0523, 40 keyframe ticks, 3 repeats of each
    python bench/recording.py --quick    # 1 repeat of each

One Runtime (Ray and the actors started once, the shipped weights), the same replay of the real scene's
keyframes streamed alternately without and with the recorder (off, on, off, on, ...), so both see the same
machine load. The recorder is wired as `bevstream replay --record` wires it (cli/_common.run_source: the
source wrapped, each record handed over; the original JPEGs from the dataroot, the devkit's annotations as
ground truth). Throughput is frame sets per second of the whole replay, the recorder's close (the queue
drained, the file finished) included; the figure is the median over repeats and the ratio on/off.
Writes bench/results/recording.json.
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

from cli.replay import recording_hooks  # noqa: E402
from replay.nuscenes.source import NuScenesSource  # noqa: E402
from runtime.api import Runtime  # noqa: E402
from runtime.config import load_config  # noqa: E402
from runtime.recording import Recorder  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "nuscenes-real-scene-0523"


def one_replay(rt: Runtime, record: bool, out: Path) -> dict:
    source = NuScenesSource(REAL, "v1.0-trainval", keyframes_only=True)
    recorder = Recorder(out / "run.mcap", **recording_hooks(source)).start() if record else None
    wrapped = recorder.wrap(source) if recorder else source
    start = time.perf_counter()
    n = 0
    for record_ in rt.iterate(wrapped):
        n += 1
        if recorder is not None:
            recorder.result(record_)
    stats = recorder.close() if recorder is not None else {}
    wall = time.perf_counter() - start
    size = (out / "run.mcap").stat().st_size if record else 0
    return {"ticks": n, "wall_s": wall, "throughput_hz": n / wall, "mcap_bytes": size, "recorder": stats}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    cfg = load_config(str(ROOT / "runtime.yaml"), {"output.progress": False})
    runs = {"off": [], "on": []}
    with Runtime(cfg) as rt, tempfile.TemporaryDirectory() as tmp:
        one_replay(rt, False, Path(tmp))  # warm-up: actors, caches, the devkit's tables
        for i in range(repeats):
            for mode in ("off", "on"):
                out = Path(tmp) / f"{mode}{i}"
                out.mkdir()
                runs[mode].append(one_replay(rt, mode == "on", out))
                print(f"{mode} #{i}: {runs[mode][-1]['throughput_hz']:.2f} ticks/s", file=sys.stderr)
    med = {m: statistics.median(r["throughput_hz"] for r in runs[m]) for m in runs}
    result = {
        "frames": "real scene-0523, 40 keyframe sets (six 1600x900 JPEGs each), as fast as possible",
        "repeats": repeats, "cores": os.cpu_count(),
        "throughput_hz_median": med, "ratio_on_off": med["on"] / med["off"],
        "mcap_mb_per_tick": statistics.median(r["mcap_bytes"] / r["ticks"] for r in runs["on"]) / 1e6,
        "runs": runs,
    }
    print(f"{'recording':>10} {'ticks/s (median)':>18}")
    for m in ("off", "on"):
        print(f"{m:>10} {med[m]:>18.2f}")
    print(f"ratio on/off: {result['ratio_on_off']:.3f}; {result['mcap_mb_per_tick']:.2f} MB per tick")
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    (ROOT / "bench" / "results" / "recording.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
