"""Benchmark: the live simulated vehicle at 12 Hz through the default runtime configuration.

    python bench/live.py            # 20 s of the vehicle (240 frame sets)
    python bench/live.py --quick    # 5 s

Measures what the issue asks of a live stream on this machine: frame sets dropped for lack of
capacity (drop records 'overload'), other drops by reason, and end-to-end latency from the oldest
camera timestamp of a set (the sensor clock is the wall clock) to the result in hand: p50/p99 and
deadline misses against the 83.3 ms frame interval. Baseline measured in the same run: the compute
of one tick in one process (backbone + BEV step, 1 torch thread each, i.e. the per-stage cost the
pipeline overlaps), so the table shows whether the model itself fits the 12 Hz budget.
Writes bench/results/live.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def stage_costs(cfg, n: int = 6) -> dict:
    """Median ms of the backbone stage and the BEV stage on the vehicle's frames, in this process."""
    import torch

    from replay.live import SimulatedVehicle
    from runtime.model import ModelFactory
    from runtime.stages import BackboneStage, BevStage, TickMeta

    torch.set_num_threads(1)
    v = cfg.source.live
    sets = list(itertools.islice(SimulatedVehicle(seed=v.seed + 1, width=v.width, height=v.height, duration_s=2.0,
                                                  realtime=False).frame_sets(), n + 2))
    model = ModelFactory.from_config(cfg.model)()
    bb, bev = BackboneStage(model), BevStage(model)
    b_ms, v_ms = [], []
    for i, fs in enumerate(sets):
        meta = TickMeta.from_frame_set(fs)
        t0 = time.perf_counter()
        p = bb.run([c.image for c in fs.cameras], meta)
        t1 = time.perf_counter()
        bev.run(p, meta)
        t2 = time.perf_counter()
        if i >= 2:
            b_ms.append((t1 - t0) * 1e3)
            v_ms.append((t2 - t1) * 1e3)
    return {"backbone_ms_median": statistics.median(b_ms), "bev_ms_median": statistics.median(v_ms)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=None)
    args = ap.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 20.0)

    from replay.live import SimulatedVehicle
    from runtime.api import Runtime
    from runtime.config import load_config

    cfg = load_config()
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"progress": False})})
    costs = stage_costs(cfg)
    v = cfg.source.live
    vehicle = SimulatedVehicle(seed=v.seed, width=v.width, height=v.height, rate_hz=v.rate_hz, duration_s=seconds,
                               jitter_ms=v.jitter_ms, late_prob=v.late_prob, drop_prob=v.drop_prob, realtime=True)
    print(f"source: {vehicle.describe()}", file=sys.stderr)
    with Runtime(cfg) as rt:
        records = list(rt.iterate(vehicle))
        report = rt.report.summary()
    warm = 12  # the first second: actors warm up (first calls allocate), not measured
    measured = [r for r in records if r.frame_id >= warm]
    ticks = [r for r in measured if r.kind == "tick"]
    drops: dict[str, int] = {}
    for r in measured:
        if r.kind == "drop":
            drops[r.reason] = drops.get(r.reason, 0) + 1
    e2e = sorted(r.end_to_end_ms for r in ticks)

    def ingest_end(r) -> int:
        return next(t.end_ns for t in r.timings if t.stage == "ingest")

    # End to end = the source's own lag (oldest exposure -> frame set handed to the runtime: bus,
    # rendering, synchronisation) + the runtime's part (ingest -> result in hand).
    source_lag = sorted((ingest_end(r) / 1e3 - r.oldest_timestamp_us) / 1e3 for r in ticks)
    runtime_part = sorted((max(t.end_ns for t in r.timings) - ingest_end(r)) / 1e6 for r in ticks)

    def pct(p: float, xs=None) -> float | None:
        xs = e2e if xs is None else xs
        return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None

    deadline = cfg.profile.deadline_ms
    result = {
        "seconds": seconds, "rate_hz": v.rate_hz, "frame_sets": len(measured), "ticks": len(ticks),
        "dropped_overload": drops.get("overload", 0), "drops_by_reason": drops,
        "end_to_end_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": e2e[-1] if e2e else None},
        "source_lag_ms": {"p50": pct(50, source_lag), "p99": pct(99, source_lag)},
        "runtime_ingest_to_result_ms": {"p50": pct(50, runtime_part), "p99": pct(99, runtime_part)},
        "deadline_ms": deadline, "deadline_misses": sum(x > deadline for x in e2e),
        "one_process_stage_cost": costs,
        "vehicle": report.get("source_stats", {}),
        "late_or_rejected_frames": report.get("late_or_rejected_frames"),
        "config": {"pipeline": cfg.pipeline.model_dump(), "stages": cfg.stages.model_dump(mode="json"),
                   "live": v.model_dump()},
        "cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(), "warmup_frame_sets": warm,
    }
    print(f"live {v.rate_hz:g} Hz for {seconds:g} s: {len(measured)} frame sets, {len(ticks)} ticks, "
          f"dropped for capacity {result['dropped_overload']}, other drops {dict((k, n) for k, n in drops.items() if k != 'overload')}")
    if e2e:
        print(f"end-to-end latency  p50 {pct(50):.1f}  p99 {pct(99):.1f}  max {e2e[-1]:.1f} ms; "
              f"deadline misses (> {deadline:.1f} ms) {result['deadline_misses']}")
        print(f"  of which the source's own lag (exposure -> set handed over) p50 {pct(50, source_lag):.1f} "
              f"p99 {pct(99, source_lag):.1f} ms; runtime (ingest -> result) p50 {pct(50, runtime_part):.1f} "
              f"p99 {pct(99, runtime_part):.1f} ms")
    if result["vehicle"]:
        print(f"vehicle: {result['vehicle']}")
    print(f"one-process stage cost: backbone {costs['backbone_ms_median']:.1f} ms, BEV {costs['bev_ms_median']:.1f} ms "
          f"(budget {1000 / v.rate_hz:.1f} ms per stage when pipelined); {os.cpu_count()} cores, "
          f"load avg {os.getloadavg()[0]:.1f}")
    out = ROOT / "bench" / "results" / "live.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
