"""Benchmark the shipped BEVStreamModel: FLOPs per tick, streaming latency, fraction of the fp32 matmul peak.

    python bench/model.py [--quick] [--threads 2] [--ticks 60]

One tick = six rectified cameras at the model input size through `forward(inputs, state)` (B = 1,
torch.inference_mode) with the shipped weights and their saved config (perception/weights/bevstream.pt,
as the runtime loads them), the ego driving at 10 m/s so both queues and the spatial GRU work every tick.

- Peak: the best (fastest) of a few 2048x2048 fp32 torch.mm at the forward's thread count, measured before
  and after the forwards; the higher of the two is the peak (the conservative choice).
- FLOPs: torch.utils.flop_counter.FlopCounterMode over one streaming forward of the plain eager model
  (convolutions, transposed convolutions, matmuls / linears, attention), per top-level module. Elementwise
  ops, grid_sample, embedding_bag and the scatter softmax are not counted (no FLOPs credited for them; their
  time is charged). The prepared model runs the same convolutions and matmuls (oneDNN's fused ops, which
  the counter does not see, so the count is taken on the eager path: the useful arithmetic of one tick).
- Variants, each its own model and state, take turns in blocks of 5 ticks (order rotating; the first tick of
  a block, which pays the switch of models in cache, is left out) so a shared, loaded machine slows them alike: `eager` (the plain model, today's path), then the levers of
  perception.fuse.prepare_for_inference one at a time, then all of them (`prepared`: what the runtime runs).
- Per-module breakdown: forward hooks on the eager and prepared models, in a pass of its own (hooks cost a
  little), medians per module; "outside modules" is the forward minus the top-level modules.
- Convolutions alone: their FLOPs over the profiler's self time of the convolution ops per tick (least
  disturbed of three alternating rounds): the fraction the forward would reach if nothing else took time.
Medians after warm-up. Writes bench/results/model.json (model_threadsN.json for --threads N other than 2).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perception.model import BEVStreamModel, ModelConfig, ModelInputs  # noqa: E402
from perception.checkpoint import load_trained_model  # noqa: E402
from perception.rectify import canonical_intrinsic, nominal_rotation, NOMINAL_YAW_DEG  # noqa: E402
from replay.sim.rig import camera_rig  # noqa: E402
from schema.messages import CAMERA_CHANNELS  # noqa: E402

WEIGHTS = ROOT / "perception" / "weights" / "bevstream.pt"
MODULES = ("backbone", "seg_head", "bev_encoder", "video", "video.motion", "video.gru", "detection_head", "road_head")
TOP_LEVEL = ("backbone", "seg_head", "bev_encoder", "video", "detection_head", "road_head")
# name -> prepare_for_inference levers (None: the plain eager model)
OFF = {"channels_last": False, "pack": False, "reuse_grids": False}
VARIANTS = {"eager": None, "channels_last": {**OFF, "channels_last": True}, "packed_convs": {**OFF, "pack": True},
            "reuse_grids": {**OFF, "reuse_grids": True}, "prepared": {}}


def canonical_rig(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    rig = camera_rig(1600, 900)
    k = canonical_intrinsic(cfg.image_size, cfg.rectify.focal)
    exts = []
    for ch in CAMERA_CHANNELS:
        m = np.eye(4)
        m[:3, :3] = nominal_rotation(math.radians(NOMINAL_YAW_DEG[ch]))
        m[:3, 3] = rig[ch].sensor_to_ego.translation
        exts.append(m)
    return torch.from_numpy(np.stack([k] * 6)).float(), torch.from_numpy(np.stack(exts)).float()


def make_tick(cfg: ModelConfig, k: int, images: torch.Tensor, rig) -> ModelInputs:
    intr, ext = rig
    pose = torch.eye(4, dtype=torch.float64)
    yaw = 0.01 * k
    pose[:2, :2] = torch.tensor([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]], dtype=torch.float64)
    pose[0, 3], pose[1, 3] = 10.0 / 12.0 * k, 0.05 * k
    return ModelInputs(
        images=images, intrinsics=intr[None], cam_to_ego=ext[None], camera_mask=torch.ones(1, 6, dtype=torch.bool),
        ego_to_global=pose[None], timestamp_s=torch.tensor([k / 12.0], dtype=torch.float64),
        kinematics=torch.tensor([[10.0, 0, 0, 0, 0, 0, 0.12]]), reset=torch.tensor([k == 0]),
    )


def matmul_peak(reps: int, n: int = 2048) -> float:
    """FLOP/s of the fastest of `reps` (n x n) @ (n x n) fp32 products (after two warm-up products)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        torch.mm(a, b)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def flops_per_tick(model: BEVStreamModel, cfg: ModelConfig) -> tuple[int, dict[str, int]]:
    """FlopCounterMode over the second tick of a stream (the first fills the state) of the eager model."""
    from torch.utils.flop_counter import FlopCounterMode

    rig = canonical_rig(cfg)
    images = torch.rand(1, 6, 3, *cfg.image_size)
    with torch.inference_mode():
        _, state = model(make_tick(cfg, 0, images, rig), None)
        counter = FlopCounterMode(display=False)
        with counter:
            model(make_tick(cfg, 1, images, rig), state)
    per_module = {}
    for name, counts in counter.get_flop_counts().items():
        if name.count(".") == 1:
            per_module[name.split(".", 1)[1]] = int(sum(counts.values()))
        elif name == "Global":
            per_module["(convolutions)"] = int(sum(v for op, v in counts.items() if "convolution" in str(op)))
    return int(counter.get_total_flops()), per_module


CONV_OPS = ("mkldnn::_convolution_pointwise", "mkldnn::_convolution_pointwise.binary", "aten::mkldnn_convolution", "aten::_convolution")


def conv_time_per_tick(model: BEVStreamModel, cfg: ModelConfig, ticks: int) -> float:
    """The ms one streaming forward spends inside convolution kernels: the profiler's self CPU time of the
    convolution ops over `ticks` ticks (after warm-up), divided by `ticks`."""
    from torch.profiler import ProfilerActivity, profile

    rig = canonical_rig(cfg)
    images = torch.rand(1, 6, 3, *cfg.image_size)
    state = None
    with torch.inference_mode():
        for k in range(4):
            _, state = model(make_tick(cfg, k, images, rig), state)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for k in range(4, 4 + ticks):
                _, state = model(make_tick(cfg, k, images, rig), state)
    us = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in CONV_OPS)
    return us / 1e3 / ticks


def stream_interleaved(models: dict[str, BEVStreamModel], cfg: ModelConfig, ticks: int, warmup: int, block: int = 5) -> dict[str, list[float]]:
    """Wall-clock ms of each model's streaming forward (its own state), the models taking turns in blocks of
    `block` consecutive ticks, the order rotating every round: a loaded machine slows them alike, and each
    block runs with its own model warm in cache (one tick each in turn would have each tick evict the last's)."""
    rig = canonical_rig(cfg)
    g = torch.Generator().manual_seed(0)
    frames = [torch.rand(1, 6, 3, *cfg.image_size, generator=g) for _ in range(4)]
    states = {name: None for name in models}
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    with torch.inference_mode():
        for r, k0 in enumerate(range(0, warmup + ticks, block)):
            for name in names[r % len(names):] + names[: r % len(names)]:
                for k in range(k0, min(k0 + block, warmup + ticks)):
                    tick = make_tick(cfg, k, frames[k % len(frames)], rig)
                    t0 = time.perf_counter()
                    _, states[name] = models[name](tick, states[name])
                    if k >= warmup and k > k0:  # the first tick of a block pays the switch between models: left out
                        times[name].append((time.perf_counter() - t0) * 1e3)
    return times


def module_breakdown(model: BEVStreamModel, cfg: ModelConfig, ticks: int, warmup: int) -> dict[str, float]:
    """Median ms per module (forward hooks) over a stream of `ticks`, and 'outside modules'."""
    mods = dict(model.named_modules())
    store: dict[str, list[float]] = defaultdict(list)
    start: dict[str, float] = {}
    handles = []
    for name in MODULES:
        if name not in mods:
            continue
        handles.append(mods[name].register_forward_pre_hook(lambda *_, n=name: start.__setitem__(n, time.perf_counter())))
        handles.append(mods[name].register_forward_hook(lambda *_, n=name: store[n].append((time.perf_counter() - start[n]) * 1e3)))
    try:
        fwd = stream_interleaved({"m": model}, cfg, ticks, warmup)["m"]
    finally:
        for h in handles:
            h.remove()
    out = {name: statistics.median(xs[warmup:]) for name, xs in store.items()}
    out["forward"] = statistics.median(fwd)
    out["outside modules"] = out["forward"] - sum(out.get(n, 0.0) for n in TOP_LEVEL)
    return out


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def summary(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "p90": float(np.percentile(xs, 90)), "min": min(xs), "n": len(xs)}


def print_report(out: dict, cfg) -> None:
    """The figures of `out` (what model.json holds) as the benchmark's table."""
    load, peaks, conv = out["load_average"], out["matmul_peak_flops_before_after"], out["convolutions"]
    total = out["flops_per_tick"]
    print(f"bevstream model benchmark: {out['cores']} cores, torch {out['torch']}, threads={out['threads']}, "
          f"load avg {load['start'][0]:.2f} (start) {load['end'][0]:.2f} (end), commit {out['commit']}")
    print(f"shipped weights, input {cfg.image_size[1]}x{cfg.image_size[0]} x 6 cameras, BEV {cfg.grid.shape[0]}x{cfg.grid.shape[1]}, "
          f"params {out['params'] / 1e6:.2f} M")
    print(f"FLOPs per tick (eager path, FlopCounterMode): {total / 1e9:.3f} G  ("
          + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in out["flops_per_module"].items()) + ")")
    print(f"fp32 2048x2048 matmul peak, best of 5, before / after: {peaks[0] / 1e9:.1f} / {peaks[1] / 1e9:.1f} GFLOP/s "
          f"-> peak {out['matmul_peak_flops'] / 1e9:.1f}")
    print(f"{'variant (interleaved)':22s} {'median ms':>10s} {'p90':>7s} {'min':>7s} {'GFLOP/s':>8s} {'of peak':>8s} {'vs eager':>9s} {'prepare ms':>11s}")
    for name, v in out["variants"].items():
        print(f"{name:22s} {v['median']:10.2f} {v['p90']:7.2f} {v['min']:7.2f} {v['gflops']:8.1f} {v['fraction_of_matmul_peak']:8.1%} "
              f"{v['speedup_vs_eager']:8.2f}x {v['prepare_ms']:11.1f}")
    print(f"convolutions alone ({conv['flops'] / 1e9:.2f} GFLOP of the {total / 1e9:.2f}), profiled kernel time per tick: "
          + ", ".join(f"{n} {ms:.1f} ms = {conv['fraction_of_matmul_peak'][n]:.1%} of peak" for n, ms in conv["kernel_ms_per_tick"].items())
          + "  (the ceiling of the forward's fraction if everything else took no time)")
    breakdown = out["module_breakdown_ms"]
    print(f"{'module (hooks), median ms':28s} {'eager':>8s} {'prepared':>9s}")
    for name in (*MODULES, "outside modules", "forward"):
        print(f"{name:28s} {breakdown['eager'].get(name, float('nan')):8.2f} {breakdown['prepared'].get(name, float('nan')):9.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short smoke run (fewer ticks and variants; ~1-2 minutes)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ticks", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ticks, warmup = (15, 4) if args.quick else (args.ticks, 10)
    load = os.getloadavg()

    variants = {"eager": None, "prepared": {}} if args.quick else VARIANTS
    models, prepare_ms = {}, {}
    for name, levers in variants.items():
        models[name] = load_trained_model(WEIGHTS)
        if levers is not None:
            t0 = time.perf_counter()
            models[name].prepare_for_inference(**levers)
            prepare_ms[name] = (time.perf_counter() - t0) * 1e3
    cfg = models["eager"].config
    params = sum(p.numel() for p in models["eager"].parameters())
    total_flops, per_module_flops = flops_per_tick(models["eager"], cfg)

    peaks = [matmul_peak(5)]
    times = stream_interleaved(models, cfg, ticks, warmup)
    peaks.append(matmul_peak(5))
    peak = max(peaks)
    breakdown = {name: module_breakdown(models[name], cfg, max(8, ticks // 2), 3) for name in ("eager", "prepared")}
    # The ceiling the convolutions set: their FLOPs over the time spent in their kernels alone (profiled).
    conv_flops = per_module_flops.pop("(convolutions)")
    rounds = [{name: conv_time_per_tick(models[name], cfg, 4 if args.quick else 8) for name in ("eager", "prepared")} for _ in range(3)]
    conv_ms = {name: min(r[name] for r in rounds) for name in ("eager", "prepared")}  # the least disturbed of 3 alternating rounds
    conv_fraction = {name: conv_flops / (ms / 1e3) / peak for name, ms in conv_ms.items()}

    med = {name: statistics.median(xs) for name, xs in times.items()}
    gflops = {name: total_flops / (m / 1e3) / 1e9 for name, m in med.items()}
    fraction = {name: g * 1e9 / peak for name, g in gflops.items()}
    out = {
        "benchmark": "model",
        "command": "python bench/model.py" + (" --quick" if args.quick else "") + (f" --ticks {args.ticks}" if args.ticks != 60 and not args.quick else "")
                   + (f" --threads {args.threads}" if args.threads != 2 else ""),
        "commit": git_commit(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "load_average": {"start": list(load), "end": list(os.getloadavg())},
        "torch": torch.__version__,
        "machine": platform.machine(),
        "weights": str(WEIGHTS.relative_to(ROOT)),
        "params": params,
        "flops_per_tick": total_flops,
        "flops_per_module": per_module_flops,
        "flop_counting": "torch.utils.flop_counter.FlopCounterMode over one streaming forward of the eager model (convs, matmuls, "
                         "attention); elementwise, grid_sample, embedding_bag and scatter ops not counted",
        "matmul_peak_flops": peak,
        "matmul_peak_flops_before_after": peaks,
        "matmul_peak_method": "fastest of 5 torch.mm 2048x2048 fp32 at the forward's thread count, before and after the forwards; the higher",
        "forward_median_ms": med["prepared"],
        "forward_gflops": gflops["prepared"],
        "fraction_of_matmul_peak": fraction["prepared"],
        "eager_forward_median_ms": med["eager"],
        "eager_fraction_of_matmul_peak": fraction["eager"],
        "speedup_vs_eager": med["eager"] / med["prepared"],
        "variants": {name: {**summary(xs), "gflops": gflops[name], "fraction_of_matmul_peak": fraction[name],
                            "speedup_vs_eager": med["eager"] / med[name], "prepare_ms": prepare_ms.get(name, 0.0),
                            "levers": variants[name]} for name, xs in times.items()},
        "module_breakdown_ms": breakdown,
        "convolutions": {"flops": conv_flops, "kernel_ms_per_tick": conv_ms, "fraction_of_matmul_peak": conv_fraction,
                         "note": "profiler self time of the convolution ops per tick: the forward's fraction cannot exceed this"},
        "ticks": ticks,
        "warmup": warmup,
    }
    print_report(out, cfg)
    path = ROOT / "bench" / "results" / ("model.json" if args.threads == 2 else f"model_threads{args.threads}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
