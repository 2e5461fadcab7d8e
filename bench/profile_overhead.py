"""Benchmark: what profiling costs a tick (`bevstream profile`, runtime/profiling/).

    python bench/profile_overhead.py            # the live vehicle, 48 measured ticks, micro-benchmark 200 repeats
    python bench/profile_overhead.py --quick    # 12 ticks, 50 repeats

What differs between profiling on and off: the runtime records its StageTimings on every run (a profile
reads the same records a `stream` or `replay` makes; runtime/profiling adds nothing to the tick path), and
the trace, tables and pictures are built after the run. So "on" = the recording code path, and the figure is
its cost per tick against the tick's latency, both measured in this one run: first a profiled run of the
default configuration gives real records and their latencies; then, in this process, the recording work of
each of those ticks is replayed with and without the recording (median over repeats, after warm-up):
  - the clock reads and StageTiming objects of every timing the tick carries (per-camera ones included);
  - the copies the runtime makes to attach them (FrameSet.with_timing x3, the TickMeta rebuild for 'submit',
    TickResult.with_timing for 'deliver'), on the run's real messages;
  - the timings' serialisation across the 3 process hand-overs (ingest -> driver -> actor -> driver), pickled
    and unpickled as Ray does (an upper bound: the whole tuple each time, though it grows along the way).
The post-processing (trace, budget table, pictures) is timed too and reported per tick; it runs after the
stream ends and is not in any tick's latency. Writes bench/results/profile_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.provenance import provenance  # noqa: E402
from cli.stream import make_vehicle  # noqa: E402
from lab.profile_plots import profile_pngs  # noqa: E402
from runtime.config import load_config  # noqa: E402
from runtime.profiling.session import profile_run, sized_for_profile  # noqa: E402
from runtime.profiling.trace import chrome_trace  # noqa: E402
from runtime.stages import TickMeta  # noqa: E402
from schema.messages import StageTiming  # noqa: E402
from schema.results import TickResult  # noqa: E402

HANDOVERS = 3  # ingest actor -> driver (the frame set), driver -> perception actor (TickMeta), actor -> driver (result)


def record_one(result: TickResult, fs, meta: TickMeta) -> None:
    """The recording work of one tick, as the runtime does it (see the module docstring)."""
    timings = tuple(StageTiming(t.stage, time.time_ns(), time.time_ns()) for t in result.timings)
    f = fs
    for t in timings[:3]:
        f = f.with_timing(t)
    TickMeta(**{**meta.__dict__, "timings": meta.timings + (timings[0],)})
    result.with_timing(timings[-1])
    for _ in range(HANDOVERS):
        pickle.loads(pickle.dumps(timings, protocol=5))


def bare_one(result: TickResult, fs, meta: TickMeta) -> None:
    """The same loop without the recording: the calls' own overhead, subtracted."""
    return None


def per_tick_us(fn, ticks: list[TickResult], fs, meta: TickMeta, repeats: int) -> float:
    for r in ticks[:5]:  # warm-up
        fn(r, fs, meta)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for r in ticks:
            fn(r, fs, meta)
        samples.append((time.perf_counter_ns() - start) / len(ticks) / 1e3)
    return statistics.median(samples)


def postprocess_ms(run, out: Path) -> dict:
    start = time.perf_counter()
    json.dumps(chrome_trace(run.records, run.live, run.layout))
    trace_s = time.perf_counter() - start
    start = time.perf_counter()
    run.table()
    table_s = time.perf_counter() - start
    start = time.perf_counter()
    profile_pngs(run.measured, run.live, out, run.cfg.profile.deadline_ms)
    plots_s = time.perf_counter() - start
    n = len(run.records)
    return {"trace_ms_per_tick": 1e3 * trace_s / n, "table_ms_per_tick": 1e3 * table_s / n,
            "plots_ms_total": 1e3 * plots_s, "records": n}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    ticks, repeats = (12, 50) if args.quick else (48, 200)
    cfg = sized_for_profile(load_config(str(ROOT / "runtime.yaml"), {"output.progress": False, "profile.ticks": ticks}))
    with tempfile.TemporaryDirectory() as tmp:
        run = profile_run(cfg, make_vehicle(cfg), out_dir=Path(tmp))
        measured = [r for r in run.measured if isinstance(r, TickResult)]
        fs = next(iter(make_vehicle(cfg, realtime=False).frame_sets()))
        meta = TickMeta.from_frame_set(fs)
        on = per_tick_us(record_one, measured, fs, meta, repeats)
        off = per_tick_us(bare_one, measured, fs, meta, repeats)
        post = postprocess_ms(run, Path(tmp))
    e2e = statistics.median(r.end_to_end_ms for r in measured)
    processing = statistics.median(r.latency_ms for r in measured)
    cost_ms = (on - off) / 1e3
    result = {
        "ticks": len(measured), "timings_per_tick": statistics.median(len(r.timings) for r in measured),
        "timings_bytes_per_tick": statistics.median(len(pickle.dumps(r.timings, protocol=5)) for r in measured),
        "recording_us_per_tick": on - off, "loop_us_per_tick": off,
        "tick_end_to_end_ms_p50": e2e, "tick_processing_ms_p50": processing,
        "overhead_percent_of_end_to_end": 100 * cost_ms / e2e, "overhead_percent_of_processing": 100 * cost_ms / processing,
        "postprocess_after_run": post,
        "config": {"ticks": ticks, "repeats": repeats, "source": "live vehicle (runtime.yaml source.live)"},
        **provenance(),
    }
    print(f"recording the timings: {result['recording_us_per_tick']:.1f} us per tick "
          f"({result['timings_per_tick']:.0f} timings, {result['timings_bytes_per_tick']:.0f} B pickled)")
    print(f"tick latency p50: end to end {e2e:.1f} ms, processing {processing:.1f} ms")
    print(f"overhead: {result['overhead_percent_of_end_to_end']:.3f} % of end to end, "
          f"{result['overhead_percent_of_processing']:.3f} % of processing (target < 2 %)")
    print(f"after the run: trace {post['trace_ms_per_tick']:.2f} ms/tick, table {post['table_ms_per_tick']:.3f} ms/tick, "
          f"pictures {post['plots_ms_total']:.0f} ms in all")
    out = ROOT / "bench" / "results" / "profile_overhead.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
