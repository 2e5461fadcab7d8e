"""Benchmark the default BEVStreamModel: FLOPs per tick, streaming latency, fraction of the fp32 matmul peak.

    python bench/model.py [--quick] [--threads 2] [--ticks 60]

One tick = six rectified cameras at the model input size through `forward(inputs, state)` (B = 1,
torch.inference_mode), the ego driving at 10 m/s so both queues and the spatial GRU work every tick.
The machine is shared: the load average is recorded, and the process CPU time per tick is reported
beside the wall-clock latency (less sensitive to other processes), and the fastest tick (min) as the
nearest a loaded machine gets to a quiet one. FLOPs are counted with torch.utils.flop_counter.FlopCounterMode (convolutions, matmuls, attention;
elementwise ops and grid_sample are not counted). The baseline measured in the same run is this
machine's fp32 matmul peak: the median time of a large torch.mm at the same thread count.
The reference paths of the BEV encoder and the video module (the plain code the inference fast paths
replace; same outputs up to float rounding) run on every tick too, alternating order, for the speed-up
ratio. Also timed: the two stages (`encode_images`, `bev_step`), the rectifier on 1600x900 uint8 images (runs
before the model, outside its budget), and the ablations single-frame (video off), dense attention,
depth-aware attention (`model.depth.attention`) and the fine level (`model.bev.fine_level`).
Writes bench/results/model.json (model_threadsN.json for --threads N other than 2).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perception.config import model_config_to_dict  # noqa: E402
from perception.model import BEVStreamModel, ModelConfig, ModelInputs  # noqa: E402
from perception.rectify import Rectifier, canonical_intrinsic, nominal_rotation, NOMINAL_YAW_DEG  # noqa: E402
from replay.sim.rig import camera_rig  # noqa: E402
from schema.messages import CAMERA_CHANNELS  # noqa: E402

BUDGET_MS = 50.0  # one tick's forward at 12 Hz, leaving room for the rest of the pipeline


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


def time_calls(fn, n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def matmul_peak(n: int, reps: int) -> float:
    """FLOP/s of the median of `reps` (n x n) @ (n x n) fp32 products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    ms = statistics.median(time_calls(lambda: torch.mm(a, b), reps, 2))
    return 2.0 * n**3 / (ms / 1e3)


def set_reference_paths(model: BEVStreamModel, on: bool) -> None:
    """Switch the BEV encoder and the video module to their plain reference paths (the code before the
    inference fast paths; same numerics up to float rounding) or back to the fast paths."""
    model.bev_encoder.fast = not on
    if model.video is not None:
        model.video.fast = not on


def stream_latency(model: BEVStreamModel, cfg: ModelConfig, ticks: int, warmup: int, cpu: list[float] | None = None,
                   reference: dict[str, list[float]] | None = None) -> list[float]:
    """Wall-clock ms of each streaming forward after warm-up; `cpu` receives the process CPU ms (all threads).
    With `reference` (a dict), every tick also runs the reference paths on their own state, alternating
    which goes first; reference['wall'] and reference['cpu'] receive their times."""
    rig = canonical_rig(cfg)
    images = torch.rand(1, 6, 3, *cfg.image_size, generator=torch.Generator().manual_seed(0))
    states = {False: None, True: None}
    times = []
    modes = (False, True) if reference is not None else (False,)
    with torch.inference_mode():
        for k in range(warmup + ticks):
            tick = make_tick(cfg, k, images, rig)
            for ref in (modes if k % 2 == 0 else modes[::-1]):
                set_reference_paths(model, ref)
                t0, c0 = time.perf_counter(), time.process_time()
                _, states[ref] = model(tick, states[ref])
                wall, proc = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
                if k < warmup:
                    continue
                if ref:
                    reference.setdefault("wall", []).append(wall)
                    reference.setdefault("cpu", []).append(proc)
                else:
                    times.append(wall)
                    if cpu is not None:
                        cpu.append(proc)
    set_reference_paths(model, False)
    return times


def flops_per_tick(model: BEVStreamModel, cfg: ModelConfig) -> tuple[int, dict[str, int]]:
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
    return int(counter.get_total_flops()), per_module


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a short smoke run (few ticks, no ablations)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ticks", type=int, default=60)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ticks, warmup = (8, 3) if args.quick else (args.ticks, 10)

    cfg = ModelConfig()
    model = BEVStreamModel(cfg).eval()
    params = sum(p.numel() for p in model.parameters())
    total_flops, per_module = flops_per_tick(model, cfg)
    peak = matmul_peak(1024 if args.quick else 2048, 5 if args.quick else 15)
    cpu_ms: list[float] = []
    ref_ms: dict[str, list[float]] = {}
    # The headline: the streaming forward alone (as the runtime runs it). Then an A/B pass in which every
    # tick also runs the reference paths, alternating order, for the speed-up ratio.
    lat = stream_latency(model, cfg, ticks, warmup, cpu_ms)
    ab_cpu: list[float] = []
    ab_lat = stream_latency(model, cfg, ticks, warmup, ab_cpu, reference=ref_ms)

    # Stages separately (what two runtime actors would each spend).
    rig = canonical_rig(cfg)
    images = torch.rand(1, 6, 3, *cfg.image_size)
    tick = make_tick(cfg, 1, images, rig)
    with torch.inference_mode():
        feats, _ = model.encode_images(images)
        _, st = model(make_tick(cfg, 0, images, rig), None)
        enc = time_calls(lambda: model.encode_images(images), max(5, ticks // 2), 2)
        bev = time_calls(lambda: model.bev_step(feats, tick, st), max(5, ticks // 2), 2)
        set_reference_paths(model, True)
        bev_ref = time_calls(lambda: model.bev_step(feats, tick, st), max(5, ticks // 2), 2)
        set_reference_paths(model, False)
        post_out, _ = model(tick, st)
        # What the runtime's BEV stage does after bev_step (random weights: few boxes; bench/postprocess.py
        # times it on the shipped weights' outputs), and the full-size seg labels that only eval asks for.
        post = time_calls(lambda: (model.detection_head.decode(post_out.detection), model.road_head.vectorize(post_out.road_logits)),
                          5 if args.quick else 10, 1)
        seg_full = time_calls(lambda: model.postprocess(post_out), 5 if args.quick else 10, 1)

    # The rectifier on real-size inputs (before the model; its own stage in the runtime).
    cam_rig = camera_rig(1600, 900)
    rect = Rectifier(cfg.rectify)
    raw = [torch.randint(0, 256, (3, 900, 1600), dtype=torch.uint8) for _ in CAMERA_CHANNELS]
    ks = [cam_rig[c].intrinsic for c in CAMERA_CHANNELS]
    exts = [cam_rig[c].sensor_to_ego.matrix for c in CAMERA_CHANNELS]
    rect_ms = time_calls(lambda: rect(raw, ks, exts), 5 if args.quick else 15, 1)

    rows = {
        "forward (default)": lat,
        "  (process CPU ms, all threads)": cpu_ms,
        "  encode_images": enc,
        "  bev_step": bev,
        "forward, A/B pass: fast paths": ab_lat,
        "forward, A/B pass: reference paths": ref_ms["wall"],
        "  (process CPU ms, all threads) ": ref_ms["cpu"],
        "  bev_step, reference paths": bev_ref,
        "decode + road vectorise": post,
        "postprocess incl. seg labels at input size": seg_full,
        "rectify 6x1600x900": rect_ms,
    }
    ablations = {}
    if not args.quick:
        for name, c in (
            ("forward, video off (single frame)", dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, enabled=False))),
            ("forward, dense attention", dataclasses.replace(cfg, bev=dataclasses.replace(cfg.bev, attention="dense"))),
            ("forward, depth-aware attention", dataclasses.replace(cfg, depth=dataclasses.replace(cfg.depth, enabled=True, attention=True))),
            ("forward, fine level", dataclasses.replace(cfg, bev=dataclasses.replace(cfg.bev, fine_level=True))),
        ):
            torch.manual_seed(0)
            m = BEVStreamModel(c).eval()
            f, _ = flops_per_tick(m, c)
            t = stream_latency(m, c, max(10, ticks // 2), 5)
            rows[name] = t
            ablations[name] = {"gflops": f / 1e9, "median_ms": statistics.median(t)}

    med = statistics.median(lat)
    achieved = total_flops / (med / 1e3)
    print(f"bevstream model benchmark: {os.cpu_count()} cores, torch {torch.__version__}, threads={args.threads}, load avg {os.getloadavg()[0]:.1f}")
    print(f"input {cfg.image_size[1]}x{cfg.image_size[0]} x 6 cameras, BEV {cfg.grid.shape[0]}x{cfg.grid.shape[1]}, params {params / 1e6:.2f} M")
    print(f"FLOPs per tick: {total_flops / 1e9:.2f} G  (" + ", ".join(f"{k} {v / 1e9:.2f}" for k, v in per_module.items()) + ")")
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s;  achieved in forward: {achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.1%} of peak")
    print(f"{'stage':36s} {'median ms':>10s} {'p90 ms':>8s} {'min ms':>8s} {'n':>4s}")
    for name, xs in rows.items():
        print(f"{name:36s} {statistics.median(xs):10.1f} {pct(xs, 90):8.1f} {min(xs):8.1f} {len(xs):4d}")
    speedup = {
        "forward_wall_median": statistics.median(ref_ms["wall"]) / statistics.median(ab_lat),
        "forward_cpu_median": statistics.median(ref_ms["cpu"]) / statistics.median(ab_cpu),
        "bev_step_wall_median": statistics.median(bev_ref) / statistics.median(bev),
    }
    print("fast paths vs reference paths, same run (x faster): " + ", ".join(f"{k} {v:.2f}" for k, v in speedup.items()))
    verdict = "within" if med <= BUDGET_MS else "OVER"
    print(f"budget: {BUDGET_MS:.0f} ms per tick -> median {med:.1f} ms is {verdict} budget")

    out = {
        "benchmark": "model",
        "command": "python bench/model.py" + (" --quick" if args.quick else "") + (f" --ticks {args.ticks}" if args.ticks != 60 else "")
                   + (f" --threads {args.threads}" if args.threads != 2 else ""),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "load_average_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "params": params,
        "flops_per_tick": total_flops,
        "flops_per_module": per_module,
        "matmul_peak_flops": peak,
        "achieved_flops": achieved,
        "fraction_of_peak": achieved / peak,
        "latency_ms": {name.strip(): {"median": statistics.median(xs), "p90": pct(xs, 90), "min": min(xs), "n": len(xs)} for name, xs in rows.items()},
        "ablations": ablations,
        "speedup_vs_reference_paths": speedup,
        "budget_ms": BUDGET_MS,
        "within_budget": med <= BUDGET_MS,
        "config": model_config_to_dict(cfg),
    }
    path = ROOT / "bench" / "results" / ("model.json" if args.threads == 2 else f"model_threads{args.threads}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
