"""Benchmark (probe for bench/soak.py): Ray's gcs_server memory per actor call, with and without task events.

    python bench/soak_gcs.py              # 20 000 calls each way
    python bench/soak_gcs.py --calls 5000

The soak saw gcs_server grow by about half its size over 10 000 ticks while every other process held
steady. Ray keeps an event record of every task and actor call in the GCS (for its state API and
dashboard) up to `task_events_max_num_task_in_gcs` (100 000 by default), so it grows with the calls
until that cap. This measures it on a trivial actor in a private Ray: gcs_server RSS before and
after N calls of a no-op method, once with the actor created with `enable_task_events=False` (the
baseline, same run) and once with Ray's default. Writes bench/results/soak_gcs.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.provenance import provenance  # noqa: E402
from bench.soak_measure import descendants, label, rss_bytes  # noqa: E402


class Echo:
    def f(self, x: int) -> int:
        return x


def gcs_mb() -> float:
    pid = next(p for p in descendants(os.getpid()) if label(p) == "gcs_server")
    return rss_bytes(pid) / 2**20


def calls(actor, n: int) -> dict:
    import ray

    ray.get(actor.f.remote(-1))
    time.sleep(3)  # task events reach the GCS about every second
    before = gcs_mb()
    t0 = time.perf_counter()
    for i in range(n):
        ray.get(actor.f.remote(i))
    wall = time.perf_counter() - t0
    time.sleep(5)
    after = gcs_mb()
    return {"calls": n, "gcs_mb_before": round(before, 1), "gcs_mb_after": round(after, 1),
            "kb_per_call": (after - before) * 1024 / n, "call_us_mean": wall / n * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=20_000)
    args = ap.parse_args()
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,
             object_store_memory=100 * 2**20)
    try:
        off = calls(ray.remote(Echo).options(num_cpus=0, enable_task_events=False).remote(), args.calls)
        on = calls(ray.remote(Echo).options(num_cpus=0).remote(), args.calls)
    finally:
        ray.shutdown()
    result = {"task_events_off": off, "task_events_on_default": on, "ray": ray.__version__, **provenance()}
    for name, r in (("enable_task_events=False", off), ("Ray's default", on)):
        print(f"{name:26} {r['calls']} calls: gcs_server {r['gcs_mb_before']:.1f} -> {r['gcs_mb_after']:.1f} MB "
              f"({r['kb_per_call']:.2f} KB per call)")
    out = ROOT / "bench" / "results" / "soak_gcs.json"
    out.write_text(json.dumps(result, indent=2))
    print("wrote bench/results/soak_gcs.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
