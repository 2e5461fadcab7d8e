"""Benchmark: accuracy against latency under compute budgets (streaming evaluation, docs/evaluation.md).

    python bench/streaming_budgets.py                    # held-out 12 Hz sim set (seed 202, 2 scenes x 10 s)
    python bench/streaming_budgets.py --dataroot DIR --version V --split S   # any 12 Hz-annotated dataroot

For each model (the shipped network; the oracle, whose outputs are the log's own annotations at no compute,
so what it loses is the runtime's latency alone) and each compute budget (`--num-cpus` of the local Ray:
2 and 1), a replay paced in real time (`--realtime`, skip_late: late cycles become drop records as on the
car) is scored with the devkit as streaming (each sample with the newest output delivered by its time) and
streaming with velocity compensation; the offline column is an unpaced replay of the same model (every
sample with its own tick). Each replay runs in its own process (its own Ray). Reports, per model x budget:
offline / streaming / +velocity NDS, the age of the outputs used (p50/p99), the ticks' processing latency
(p50/p99) and the share of frame sets dropped. Writes bench/results/streaming_budgets.json and the picture of
accuracy against latency, docs/images/accuracy_latency.png (`--plot-only`: the picture from the json alone).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.provenance import provenance, relative  # noqa: E402

MODELS = {"network": [], "oracle": ["--model", "oracle"]}
BUDGETS = (2, 1)  # num_cpus of the local Ray


def export_held_out(out: Path) -> tuple[Path, str, str]:
    """The held-out 12 Hz simulated set (seed 202 was never trained on; docs/model-card.md)."""
    from replay.export.dataset import ExportConfig, export_dataset

    export_dataset(ExportConfig(out=out, scenes=2, seed=202, version="v1.0-trainval", split="val", width=352,
                                height=198, duration_s=10.0, annotate_every_frame=True))
    return out, "v1.0-trainval", "val"


def replay(data: tuple[Path, str, str], out: Path, model: list[str], num_cpus: int, realtime: bool) -> dict:
    """One `bevstream replay` in a process of its own -> its summary.json."""
    root, version, split = data
    cmd = [sys.executable, "-m", "cli.main", "replay", "--dataroot", str(root), "--version", version, "--split", split,
           "--num-cpus", str(num_cpus), "--out", str(out), "--no-progress", *model] + (["--realtime"] if realtime else [])
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


def score(data: tuple[Path, str, str], run: Path, offline: Path, out: Path) -> dict:
    """The devkit's NDS/mAP of the offline file and the run's streaming variants, and the outputs' age."""
    from nuscenes.nuscenes import NuScenes

    from lab.evaluate import Split, score_streaming

    root, version, split = data
    nusc = NuScenes(version, str(root), verbose=False)
    report = score_streaming(Split(nusc, root, version, split, out), run, offline_results=offline)["streaming"]
    return {name: {"NDS": col["detection"]["NDS"], "mAP": col["detection"]["mAP"], "age_ms": col["age_ms"],
                   "empty_samples": col.get("empty_samples", 0)} for name, col in report.items()}


def row(summary: dict, scores: dict) -> dict:
    """A paced run's figures: ticks, drops (all 'overload': late cycles passed over), processing latency, scores."""
    lat = summary["latency_ms"]
    return {"ticks": summary["ticks"], "dropped": summary["dropped"], "drops_by_reason": summary["drops_by_reason"],
            "drop_pct": round(100.0 * summary["dropped"] / max(summary["frame_sets"], 1), 1),
            "throughput_hz": summary["throughput_hz"], "latency_ms": {"p50": lat.get("p50"), "p99": lat.get("p99")},
            "scores": scores}


def print_table(rows: dict) -> None:
    print(f"{'model':<8} {'cpus':>4} {'NDS offline':>11} {'streaming':>9} {'+velocity':>9} {'age p50/p99 ms':>15} "
          f"{'latency p50/p99 ms':>18} {'dropped':>7}")
    for key, r in rows.items():
        s = r["scores"]
        age = s["streaming"]["age_ms"]
        print(f"{r['model']:<8} {r['num_cpus']:>4} {s['offline']['NDS']:>11.4f} {s['streaming']['NDS']:>9.4f} "
              f"{s['streaming+velocity']['NDS']:>9.4f} {age.get('p50', 0):>7.0f}/{age.get('p99', 0):<7.0f} "
              f"{r['latency_ms']['p50'] or 0:>9.0f}/{r['latency_ms']['p99'] or 0:<8.0f} {r['drop_pct']:>6.1f}%")


def plot(result: dict, path: Path) -> Path:
    """Accuracy against latency (lab.profile_plots): per model x budget, NDS offline and streaming at the
    ticks' median latency, the budget line at one 12 Hz cycle."""
    from lab.profile_plots import accuracy_latency_png

    rows = [{"label": f"{r['model']}, {r['num_cpus']} CPU", "latency_ms": r["latency_ms"]["p50"],
             "nds_offline": r["scores"]["offline"]["NDS"], "nds_streaming": r["scores"]["streaming"]["NDS"]}
            for r in result["rows"].values()]
    return accuracy_latency_png(rows, path, budget_ms=1000 / 12)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataroot", type=Path, default=None, help="a 12 Hz-annotated dataroot (default: export one)")
    ap.add_argument("--version", default="v1.0-trainval")
    ap.add_argument("--split", default="val")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS), metavar="NUM_CPUS")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "streaming_budgets.json")
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "images" / "accuracy_latency.png")
    ap.add_argument("--plot-only", action="store_true", help="redraw the picture from --out, run nothing")
    args = ap.parse_args()
    if args.plot_only:
        print(f"wrote {relative(str(plot(json.loads(args.out.read_text()), args.png)))}")
        return 0
    head = {"provenance_start": provenance()}
    with tempfile.TemporaryDirectory(prefix="bevstream-budgets-") as tmp:
        tmp = Path(tmp)
        data = (args.dataroot, args.version, args.split) if args.dataroot else export_held_out(tmp / "data")
        rows = {}
        for model in args.models:
            offline_run = tmp / f"{model}-offline"
            replay(data, offline_run, MODELS[model], max(args.budgets), realtime=False)
            for cpus in args.budgets:
                run = tmp / f"{model}-{cpus}cpu"
                summary = replay(data, run, MODELS[model], cpus, realtime=True)
                scores = score(data, run, offline_run / "results_nusc.json", tmp / f"eval-{model}-{cpus}")
                rows[f"{model}-{cpus}cpu"] = {"model": model, "num_cpus": cpus, **row(summary, scores)}
                print(f"{model}, {cpus} CPU: NDS streaming {scores['streaming']['NDS']:.4f}", flush=True)
        source = "held-out simulated set (seed 202, 2 scenes x 10 s, 352x198, every cycle annotated)" if not args.dataroot \
            else relative(f"{args.dataroot} ({args.version}, {args.split})")
    result = {"source": source, "pacing": "real time x1, skip_late", **head, "provenance_end": provenance(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print_table(rows)
    print(f"\nwrote {relative(str(args.out))}, {relative(str(plot(result, args.png)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
