"""Benchmark: the live simulated vehicle at 12 Hz through the default runtime configuration.

    python bench/live.py            # 20 s of the vehicle (240 frame sets)
    python bench/live.py --quick    # 5 s
    python bench/live.py --seconds 10 --ab 2   # + 2 interleaved runs each of live_encode camera / set
    python bench/live.py --seconds 10 --ab 2 --vary stages.bev.torch_threads=2,1   # any runtime.yaml key

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
from bench.provenance import provenance, relative  # noqa: E402


def stage_costs(cfg, n: int = 6) -> dict:
    """Median ms of the backbone stage and the BEV stage on the vehicle's frames, in this process."""
    import torch

    from replay.sim.vehicle import SimulatedVehicle
    from runtime.model_adapter import ModelFactory
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


def pct(xs: list[float], p: float) -> float | None:
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None


def exposure_latencies(ticks: list) -> dict:
    """since_first_exposure_ms, since_last_exposure_ms, processing_ms, rig_spread_ms: p50/p90/p99/max each."""
    from runtime.report import RunReport

    report = RunReport(live=True)
    for t in ticks:
        report.add(t)
    s = report.summary()
    keep = ("p50", "p90", "p99", "max")
    return {k: {p: s[k].get(p) for p in keep} for k in ("since_first_exposure_ms", "since_last_exposure_ms",
                                                        "processing_ms", "rig_spread_ms")}


def live_run(cfg, seconds: float, warm: int = 12) -> dict:
    """One stream of the simulated vehicle through a fresh Runtime with `cfg`: the figures of live.json."""
    import ray

    from replay.sim.vehicle import SimulatedVehicle
    from runtime.api import Runtime

    v = cfg.source.live
    vehicle = SimulatedVehicle(seed=v.seed, width=v.width, height=v.height, rate_hz=v.rate_hz, duration_s=seconds,
                               jitter_ms=v.jitter_ms, late_prob=v.late_prob, drop_prob=v.drop_prob, realtime=True)
    print(f"source: {vehicle.describe()}; live_encode {cfg.pipeline.live_encode}", file=sys.stderr)
    with Runtime(cfg) as rt:
        # one process for both stages (PerceptionActor) unless their placement differs
        actors = {"perception": rt.supervisor.bev} if rt.supervisor.fused else {"backbone": rt.supervisor.backbone,
                                                                                "bev": rt.supervisor.bev}
        cpu0, drv0 = ray.get([a.cpu_seconds.remote() for a in actors.values()]), time.process_time()
        cams0 = ray.get(rt.supervisor.backbone.cameras_encoded.remote())
        records = list(rt.iterate(vehicle))
        cpu1, drv1 = ray.get([a.cpu_seconds.remote() for a in actors.values()]), time.process_time()
        cams = ray.get(rt.supervisor.backbone.cameras_encoded.remote()) - cams0
        report = rt.report.summary()
    measured = [r for r in records if r.frame_id >= warm]  # the first second: actors warm up, not measured
    ticks = [r for r in measured if r.kind == "tick"]
    drops: dict[str, int] = {}
    for r in measured:
        if r.kind == "drop":
            drops[r.reason] = drops.get(r.reason, 0) + 1
    e2e = sorted(r.end_to_end_ms for r in ticks)

    def ingest_end(r) -> int:
        return next(t.end_ns for t in r.timings if t.stage == "ingest")

    # End to end = the source's own lag (oldest exposure -> frame set handed to the runtime: bus,
    # rendering, synchronisation) + the runtime's part (ingest -> result in hand). With per-camera
    # encoding the backbone ran before the hand-over, so the runtime's part is mostly the BEV step.
    source_lag = sorted((ingest_end(r) / 1e3 - r.oldest_timestamp_us) / 1e3 for r in ticks)
    runtime_part = sorted((max(t.end_ns for t in r.timings) - ingest_end(r)) / 1e6 for r in ticks)
    complete = sorted(r.end_to_end_ms for r in ticks if not r.degraded)
    degraded = sorted(r.end_to_end_ms for r in ticks if r.degraded)
    stage_p50 = {}
    for r in ticks:
        for t in r.timings:
            stage_p50.setdefault(t.stage, []).append(t.duration_ms)
    deadline = cfg.profile.deadline_ms
    n_all = max(len(records), 1)  # every frame set (ticks and drops)
    return {
        "seconds": seconds, "rate_hz": v.rate_hz, "frame_sets": len(measured), "ticks": len(ticks),
        "dropped_overload": drops.get("overload", 0), "drops_by_reason": drops,
        "end_to_end_ms": {"p50": pct(e2e, 50), "p90": pct(e2e, 90), "p99": pct(e2e, 99), "max": e2e[-1] if e2e else None},
        # as Autoware and openpilot report them (measured ticks only): from the set's first / last exposure,
        # the processing from the synchroniser's hand-over, and the rig's spread (runtime/report.py)
        **exposure_latencies(ticks),
        "drop_percent": 100.0 * sum(drops.values()) / max(len(measured), 1),
        "source_lag_ms": {"p50": pct(source_lag, 50), "p99": pct(source_lag, 99)},
        "runtime_ingest_to_result_ms": {"p50": pct(runtime_part, 50), "p99": pct(runtime_part, 99)},
        "deadline_ms": deadline, "deadline_misses": sum(x > deadline for x in e2e),
        "end_to_end_ms_complete_sets": {"n": len(complete), "p50": pct(complete, 50), "p99": pct(complete, 99)},
        "end_to_end_ms_degraded_sets": {"n": len(degraded), "p50": pct(degraded, 50), "p99": pct(degraded, 99)},
        "stage_ms_p50": {k: statistics.median(x) for k, x in stage_p50.items()},
        "cpu_ms_per_frame_set": {**{k: (b - a) * 1e3 / n_all for k, a, b in zip(actors, cpu0, cpu1)},
                                 "driver": (drv1 - drv0) * 1e3 / n_all},
        # every stage actor's CPU (one process when backbone and BEV share it, two otherwise): comparable across both
        "cpu_ms_per_set_actors": sum((b - a) * 1e3 / n_all for a, b in zip(cpu0, cpu1)),
        "cameras_encoded": cams,
        # cameras the backbone encoded beyond those of the sets that became results: with admission at a
        # set's first camera (live_encode camera) a set dropped for capacity costs none
        "cameras_encoded_not_in_results": cams - sum(len(r.seg_channels) for r in records if r.kind == "tick"),
        "vehicle": report.get("source_stats", {}),
        "late_or_rejected_frames": report.get("late_or_rejected_frames"),
        "live_encode": cfg.pipeline.live_encode,
    }


def parse_vary(text: str) -> tuple[str, list]:
    """'pipeline.live_encode=camera,set' -> ('pipeline.live_encode', ['camera', 'set']) (values as YAML)."""
    import yaml

    key, _, values = text.partition("=")
    vals = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    if not key or len(vals) < 2:
        raise SystemExit(f"--vary wants KEY=V1,V2[,...], got {text!r}")
    return key.strip(), vals


def with_setting(cfg, key: str, value):
    """The config with one dotted key changed, validated like runtime.yaml."""
    from runtime.config import config_from_dict

    return config_from_dict(cfg.model_dump(), origin="--vary", overrides={key: value})


def print_run(result: dict, costs: dict, seconds: float, rate_hz: float) -> None:
    """One live run's figures: drops, end-to-end latency and its parts, stage medians, CPU per set."""
    e2e, lag, part = result["end_to_end_ms"], result["source_lag_ms"], result["runtime_ingest_to_result_ms"]
    drops = result["drops_by_reason"]
    print(f"live {rate_hz:g} Hz for {seconds:g} s: {result['frame_sets']} frame sets, {result['ticks']} ticks, "
          f"dropped for capacity {result['dropped_overload']}, other drops {dict((k, n) for k, n in drops.items() if k != 'overload')}")
    if e2e["p50"] is not None:
        print(f"end-to-end latency  p50 {e2e['p50']:.1f}  p99 {e2e['p99']:.1f}  max {e2e['max']:.1f} ms; "
              f"deadline misses (> {result['deadline_ms']:.1f} ms) {result['deadline_misses']}")
        print(f"  of which the source's own lag (exposure -> set handed over) p50 {lag['p50']:.1f} "
              f"p99 {lag['p99']:.1f} ms; runtime (ingest -> result) p50 {part['p50']:.1f} p99 {part['p99']:.1f} ms")
        for kind in ("complete", "degraded"):
            k = result[f"end_to_end_ms_{kind}_sets"]
            if k["n"]:
                print(f"  {kind} sets: {k['n']}, end-to-end p50 {k['p50']:.1f} p99 {k['p99']:.1f} ms")
    print("stage medians (ms): " + ", ".join(f"{k} {x:.1f}" for k, x in result["stage_ms_p50"].items()))
    print("CPU per frame set (ms): " + ", ".join(f"{k} {x:.1f}" for k, x in result["cpu_ms_per_frame_set"].items())
          + f" ({result['cameras_encoded']} cameras encoded)")
    print("from exposure to result (ms): " + "; ".join(f"{k[:-3]} p50 {result[k]['p50']:.1f} p99 {result[k]['p99']:.1f}"
                                                    for k in ("since_first_exposure_ms", "since_last_exposure_ms",
                                                              "processing_ms", "rig_spread_ms") if result[k]["p50"] is not None))
    if result["vehicle"]:
        print(f"vehicle: {result['vehicle']}")
    print(f"one-process stage cost: backbone {costs['backbone_ms_median']:.1f} ms, BEV {costs['bev_ms_median']:.1f} ms "
          f"(budget {1000 / rate_hz:.1f} ms per stage when pipelined); {os.cpu_count()} cores, "
          f"load avg {os.getloadavg()[0]:.1f}")


AB_FIGURES = {"e2e_p50": ("end_to_end_ms", "p50"), "e2e_p99": ("end_to_end_ms", "p99"),
              "dropped_overload": ("dropped_overload",), "runtime_part_p50": ("runtime_ingest_to_result_ms", "p50"),
              "cpu_ms_per_set_actors": ("cpu_ms_per_set_actors",)}


def ab_runs(cfg, vary: str, n: int, seconds: float, warm: int) -> dict:
    """`n` interleaved runs of each value of `vary` (KEY=V1,V2; order alternating, so drifting machine load hits
    all alike): per value the medians of AB_FIGURES, and their ratios over the last value."""
    key, values = parse_vary(vary)
    runs: dict[str, list[dict]] = {str(x): [] for x in values}
    for i in range(n):
        for x in (values if i % 2 == 0 else values[::-1]):
            runs[str(x)].append(live_run(with_setting(cfg, key, x), seconds, warm))

    def med(name: str, path: tuple[str, ...]) -> float:
        vals = []
        for r in runs[name]:
            for k in path:
                r = r[k]
            vals.append(r)
        return statistics.median(vals)

    ab: dict = {"key": key, "runs": n, "seconds": seconds}
    for name in runs:
        ab[name] = {fig: med(name, path) for fig, path in AB_FIGURES.items()}
        ab[name]["each"] = [{k: r[k] for k in ("end_to_end_ms", "dropped_overload", "runtime_ingest_to_result_ms",
                                               "cpu_ms_per_frame_set", "stage_ms_p50")} for r in runs[name]]
    base = str(values[-1])
    ab["ratios_over_" + base] = {name: {k: ab[name][k] / ab[base][k] for k in ("e2e_p50", "e2e_p99", "cpu_ms_per_set_actors")
                                        if ab[base][k]}
                                 for name in runs if name != base}
    print(f"A/B {key} ({n} interleaved runs each of {seconds:g} s):")
    for name in runs:
        a = ab[name]
        print(f"  {name}: e2e p50 {a['e2e_p50']:.1f} p99 {a['e2e_p99']:.1f} ms, overload drops {a['dropped_overload']:g}, "
              f"actors' CPU per set {a['cpu_ms_per_set_actors']:.1f} ms")
    print(f"  ratios over {base}: {ab['ratios_over_' + base]}")
    return ab


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--ab", type=int, default=0, metavar="N",
                    help="also N interleaved runs of each value of --vary: medians and ratios")
    ap.add_argument("--rate", type=float, default=None, metavar="HZ",
                    help="camera rate instead of source.live.rate_hz (e.g. an A/B below capacity on a busy machine)")
    ap.add_argument("--vary", default="pipeline.live_encode=camera,set", metavar="KEY=V1,V2",
                    help="the runtime.yaml key and values the --ab runs compare (ratios over the last value)")
    args = ap.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 20.0)

    from runtime.config import load_config

    cfg = load_config()
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"progress": False})})
    if args.rate:
        cfg = with_setting(cfg, "source.live.rate_hz", args.rate)
    costs = stage_costs(cfg)
    v = cfg.source.live
    warm = 12
    result = live_run(cfg, seconds, warm)
    result.update({
        "one_process_stage_cost": costs,
        "config": {"pipeline": cfg.pipeline.model_dump(), "stages": cfg.stages.model_dump(mode="json"),
                   "sync": cfg.sync.model_dump(), "live": v.model_dump()},
        **provenance(), "warmup_frame_sets": warm,
    })
    print_run(result, costs, seconds, v.rate_hz)
    if args.ab:
        result["ab"] = ab_runs(cfg, args.vary, args.ab, seconds, warm)
    out = ROOT / "bench" / "results" / "live.json"
    out.write_text(relative(json.dumps(result, indent=2)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
