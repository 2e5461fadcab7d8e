"""Benchmark: a soak of the whole runtime, 10 000 ticks, for memory growth and latency drift.

    python bench/soak.py                 # 10 000 ticks (about 17-25 min on 2 shared cores)
    python bench/soak.py --ticks 2000    # shorter (warm-up and windows shrink to fit)
    python bench/soak.py --quick         # 300 ticks
    python bench/soak.py --check         # exit 1 when a goal is not met

The source: a small simulated drive exported once in the nuScenes format (2 scenes x 10 s, 352x198,
12 Hz camera sweeps: 230 frame sets) and replayed through `NuScenesSource` in a loop, frame ids running
on, a scene change (`new_scene`: the temporal state resets) every ~115 ticks. Why this and not the live
vehicle: a replay exercises every part that lives for the whole run (the devkit reader and JPEG decode
in the driver's reader threads, the prescale, ray.put, the perception actor, its state checkpoints to the
StateStore every `checkpoint_every` ticks, the sink actor writing ticks.jsonl and results_nusc.json) and
loses nothing, so every one of the 10 000 frame sets becomes a tick; the live vehicle would spend most of
the two cores rendering sets it then drops for capacity (bench/live.py), and the real scene's 1600x900
JPEGs would stretch 10 000 ticks past 25 minutes. At 352x198 a tick costs about what the model costs
(its rectifier input is the same whatever the camera size). The default runtime.yaml otherwise.

Measured:
- resident memory (VmRSS) of the driver and every process under it (the actors, raylet with the object
  store, gcs_server, Ray's agents and idle workers), sampled every `--interval` s; growth =
  (RSS in the last window - RSS in the first window after warm-up) / the first, each the median of its
  samples, per process and in total; the goal is <= 5 % (total and each process);
- latency per tick (TickResult.latency_ms: load + submit -> result in hand); p99 of the first `--window`
  ticks after warm-up against the last `--window`; the goal is a ratio within 10 %;
- accounting: frame sets handed to the runtime = ticks + drop records (unaccounted must be 0).
The machine is shared: other jobs' load moves the p99s, so the json has the load average at start and end
(`load_average_start`, `load_average`) and the mean 1-minute load over each window (`load_average_windows`).
Writes bench/results/soak.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.provenance import provenance, relative  # noqa: E402
from bench.soak_measure import RssSampler, accounting, latency_windows, rss_growth, window_load  # noqa: E402

GROWTH_GOAL = 0.05  # resident memory growth after warm-up
P99_GOAL = 0.10  # |p99 last / p99 first - 1|


class LoopingReplay:
    """A replay source that plays `source` again and again until `total` frame sets went out, frame ids
    running on across passes (each pass starts with its first scene's new_scene set). Counts what it yields."""

    is_live = False

    def __init__(self, source, total: int):
        self.source, self.total = source, int(total)
        self.emitted = 0
        self.scene_starts = 0
        self.passes = 0

    def decode_for(self, needed_size, workers: int = 1) -> None:  # pipeline.scaled_decode reaches the replay
        self.source.decode_for(needed_size, workers=workers)

    def describe(self) -> str:
        text = self.source.describe().replace(str(getattr(self.source, "dataroot", "")), "<exported drive>")
        return f"{text}, looped to {self.total} frame sets"

    def frame_sets(self):
        while self.emitted < self.total:
            self.source.first_frame_id = self.emitted
            self.passes += 1
            n0 = self.emitted
            for fs in self.source.frame_sets():
                if self.emitted >= self.total:
                    return
                self.emitted += 1
                self.scene_starts += bool(fs.new_scene)
                yield fs
            if self.emitted == n0:
                raise RuntimeError(f"{self.source.describe()} yielded no frame set")


def export_drive(out: Path, seconds: float, width: int, height: int) -> Path:
    """The small simulated drive (2 scenes, seed 3) as a nuScenes-format dataroot in `out`."""
    from replay.export.dataset import ExportConfig, export_dataset

    export_dataset(ExportConfig(out=out, scenes=2, seed=3, version="v1.0-mini", width=width, height=height,
                                duration_s=seconds, workers=2))
    return out


def actor_names(rt) -> dict[int, str]:
    """PID -> role of the runtime's stage actors (they report os.getpid())."""
    import ray

    sup = rt.supervisor
    actors = {"perception": sup.bev} if sup.fused else {"backbone": sup.backbone, "bev": sup.bev}
    return {pid: f"actor:{name}" for name, pid in zip(actors, ray.get([a.pid.remote() for a in actors.values()]))}


def soak(cfg, source: LoopingReplay, out_dir: Path, warmup: int, interval_s: float) -> dict:
    """Stream `source` through one Runtime, sampling memory; keeps per tick only its latency (the driver must
    not grow by holding results). -> latencies, drops, the sampler, the runtime's report extras."""
    from runtime.api import Runtime
    from schema.results import TickResult

    latencies: list[float] = []
    drops: dict[str, int] = {}
    done = [0]
    with Runtime(cfg) as rt:
        sampler = RssSampler(interval_s=interval_s, progress=lambda: done[0], names=actor_names(rt)).start()
        t0 = time.monotonic()
        try:
            for rec in rt.iterate(source, out_dir=out_dir):
                if isinstance(rec, TickResult):
                    latencies.append(rec.latency_ms)
                else:
                    drops[rec.reason] = drops.get(rec.reason, 0) + 1
                done[0] += 1
                if done[0] in (warmup, source.total):  # the end of the warm-up; the last record, while the
                    sampler.sample()  # stream's actors (the sink too: it closes when the stream ends) are up
                if done[0] % 1000 == 0:
                    print(f"  {done[0]} frame sets, {time.monotonic() - t0:.0f} s, "
                          f"RSS total {sampler.samples[-1].total / 2**20:.0f} MB", file=sys.stderr, flush=True)
        finally:
            sampler.stop()
        wall = time.monotonic() - t0
        extra = dict(rt.report.extra) if rt.report is not None else {}
    return {"latencies": latencies, "drops": drops, "sampler": sampler, "wall_s": wall,
            "actor_restarts": extra.get("actor_restarts"), "sink_files_mb": {
                p.name: round(p.stat().st_size / 2**20, 2) for p in sorted(out_dir.glob("*")) if p.is_file()}}


def windows(ticks: int, warmup: int | None, window: int | None) -> tuple[int, int]:
    """Warm-up and window sizes for a run of `ticks`: 500 and 1000 for 10 000, scaled down to fit."""
    warmup = min(500, ticks // 10) if warmup is None else warmup
    window = min(1000, (ticks - warmup) // 2) if window is None else window
    if warmup < 0 or window < 1 or warmup + 2 * window > ticks:
        raise SystemExit(f"--ticks {ticks} cannot hold a warm-up of {warmup} and two windows of {window}")
    return warmup, window


def series_per_process(samples: list, names, points: int = 60) -> dict[str, list]:
    """[tick, MB] of each of `names` at about `points` samples over the run: where a process grew, and whether
    it levels off."""
    step = max(1, len(samples) // points)
    picked = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    return {n: [[s.tick, round(s.rss[n] / 2**20, 1)] for s in picked if n in s.rss] for n in names}


def goals(result: dict) -> dict:
    g, lat = result["rss_growth"], result
    out = {"rss_growth_total": g["total"] <= GROWTH_GOAL, "rss_growth_each_process": (g["max"] or 0) <= GROWTH_GOAL,
           "p99_within_10_percent": abs(lat["p99_ratio"] - 1) <= P99_GOAL,
           "every_frame_set_accounted": result["accounting"]["unaccounted"] == 0}
    return {"goal_growth": GROWTH_GOAL, "goal_p99": P99_GOAL, "met": out, "all_met": all(out.values())}


def report(result: dict) -> None:
    g, acc = result["rss_growth"], result["accounting"]
    print(f"soak: {result['ticks']} ticks in {result['duration_s']:.0f} s ({result['ticks'] / result['duration_s']:.1f}/s); "
          f"warm-up {result['warmup_ticks']}, windows of {result['window_ticks']} ticks; "
          f"load avg {result['load_average_start'][0]:.1f} -> {result['load_average'][0]:.1f}")
    print(f"{'1-min load average (mean)':34} {result['load_average_windows']['first']:14.1f} "
          f"{result['load_average_windows']['last']:14.1f}")
    print(f"{'figure':34} {'first window':>14} {'last window':>14} {'change':>9}")
    print(f"{'p99 latency (ms)':34} {result['p99_first_ms']:14.1f} {result['p99_last_ms']:14.1f} "
          f"{result['p99_ratio'] - 1:+9.1%}")
    print(f"{'median latency (ms)':34} {result['median_first_ms']:14.1f} {result['median_last_ms']:14.1f}")
    print(f"{'RSS total (MB)':34} {g['total_start_mb']:14.1f} {g['total_end_mb']:14.1f} {g['total']:+9.1%}")
    for name, p in sorted(g["per_process"].items(), key=lambda kv: -kv[1]["start_mb"]):
        print(f"{'  ' + name:34} {p['start_mb']:14.1f} {p['end_mb']:14.1f} {p['growth']:+9.1%}")
    print(f"frame sets in {acc['frame_sets_in']} = ticks {acc['ticks']} + drops {acc['dropped']} "
          f"{acc['drops_by_reason']}; unaccounted {acc['unaccounted']}; scene changes {result['scene_changes']}; "
          f"actor restarts {result['actor_restarts']}")
    for name, ok in result["goals"]["met"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ticks", type=int, default=None, help="frame sets to run (default 10 000; --quick 300)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--warmup", type=int, default=None, help="ticks before the first window (default 500, scaled)")
    ap.add_argument("--window", type=int, default=None, help="ticks per p99/RSS window (default 1000, scaled)")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between RSS samples")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    ap.add_argument("--check", action="store_true", help="exit 1 when a goal is not met")
    args = ap.parse_args()
    ticks = args.ticks or (300 if args.quick else 10_000)
    warmup, window = windows(ticks, args.warmup, args.window)
    load_start = list(os.getloadavg())
    measured = provenance()["commit"]  # at the start: the code that ran (HEAD may move during a long soak)

    from replay.nuscenes.source import NuScenesSource
    from runtime.config import load_config

    cfg = load_config()
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"progress": False})})
    with tempfile.TemporaryDirectory(prefix="bevstream-soak-") as tmp:
        t0 = time.monotonic()
        root = export_drive(Path(tmp) / "drive", seconds=10.0, width=352, height=198)
        export_s = time.monotonic() - t0
        source = LoopingReplay(NuScenesSource(root, "v1.0-mini"), ticks)
        print(f"source: {source.describe()} (exported in {export_s:.0f} s)", file=sys.stderr)
        run = soak(cfg, source, Path(tmp) / "run", warmup, args.interval)
    lat = latency_windows(run["latencies"], warmup, window)
    n = run["sampler"].samples[-1].tick
    spans = (warmup, warmup + window), (n - window, n)
    growth = rss_growth(run["sampler"].samples, *spans)
    result = {
        "ticks": len(run["latencies"]), "rss_growth": growth, **lat, "warmup_ticks": warmup,
        "accounting": accounting(source.emitted, len(run["latencies"]), run["drops"]),
        "drops_by_reason": run["drops"], "duration_s": run["wall_s"], "scene_changes": source.scene_starts,
        "passes": source.passes, "actor_restarts": run["actor_restarts"], "sink_files_mb": run["sink_files_mb"],
        "rss_series": [{"tick": s.tick, "t_s": round(s.wall_s, 1), "total_mb": round(s.total / 2**20, 1),
                        "load1": round(s.load1, 2)}
                       for s in run["sampler"].samples[::max(1, len(run["sampler"].samples) // 120)]],
        "rss_series_per_process_mb": series_per_process(run["sampler"].samples, growth["per_process"]),
        "rss_interval_s": args.interval, "source": source.describe(),
        "config": {"pipeline": cfg.pipeline.model_dump(), "ray": cfg.ray.model_dump()},
        "load_average_windows": window_load(run["sampler"].samples, *spans), "load_average_start": load_start,
        **provenance(), "commit": measured,
    }
    result["goals"] = goals(result)
    report(result)
    args.out.write_text(relative(json.dumps(result, indent=2)))
    print(f"wrote {relative(str(args.out))}")
    return 1 if args.check and not result["goals"]["all_met"] else 0


if __name__ == "__main__":
    sys.exit(main())
