"""Benchmark: the Ray runtime against the plain offline loop research code uses, same weights, same frames.

    python bench/runtime.py            # 24 ticks of the real nuScenes scene (keyframes, 1600x900) if present
    python bench/runtime.py --quick    # 8 ticks
    python bench/runtime.py --source sim   # simulated vehicle frames (352x198), preloaded

Baseline (same run, same process start): one process, one tick after another: load the frame set,
rectify, `BEVStreamModel.forward`, `postprocess` (seg labels at the model's seg resolution, as the
runtime returns them), boxes and road lines to global (torch threads: the better of 1 and all cores
in each repeat); JPEGs decoded in full, as research code does. Loop and runtime runs alternate, order
swapped every repeat; medians over repeats. With pipeline.scaled_decode (default) the runtime decodes
JPEGs only as large as the rectifier uses them; the same loop with that decode runs beside it (a row
of its own, and the reference for "same detections"), so what the decode saves and what the
pipeline costs are told apart.
CPU per tick: the loop's process; the runtime's actors + driver.
Also (not --quick), variants in the same run: the other replay_max_in_flight, the other read_ahead,
the other replay_decode (JPEGs decoded in the backbone stage or in the driver) and scaled_decode false.
Per process CPU and the hand-over gaps are in the json.
Runtime: the default runtime.yaml pipeline (backbone actor + BEV actor; for a replay one tick in
flight, each stage on every core in turn, a set loaded by the driver's reader threads when a slot
frees) on the same frames from the same source, with the same weights (a seeded random-init
checkpoint written once and loaded by both, or the configured/shipped weights).
Reports throughput (ticks/s over the measured ticks) and per-tick latency (median): for the loop,
load + compute of a tick; for the runtime, TickResult.latency_ms (load + submit -> result in hand).
Writes bench/results/runtime.json.
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
from bench.provenance import provenance, relative  # noqa: E402
REAL_SCENE = ROOT.parent / "shared" / "data" / "nuscenes-real-scene-0523"


def frame_source(kind: str, n: int):
    """(description, a fresh iterator of the first n frame sets (loading happens as it is iterated),
    the source's decode_for or None (NuScenesSource: how large its JPEGs decode))."""
    import itertools

    if kind == "nuscenes":
        from replay.nuscenes.source import NuScenesSource

        src = NuScenesSource(REAL_SCENE, "v1.0-trainval", keyframes_only=True)
        return src.describe(), (lambda: itertools.islice(src.frame_sets(), n)), src.decode_for
    from replay.sim.vehicle import SimulatedVehicle

    veh = SimulatedVehicle(seed=0, width=352, height=198, duration_s=n / 12.0 + 1.0, realtime=False)
    sets = list(itertools.islice(veh.frame_sets(), n))  # preloaded: rendering is not what is measured
    return veh.describe() + " (preloaded)", (lambda: iter(sets)), None


def offline_loop(factory, make_iter, warmup: int, threads: int, decode_for=None) -> dict:
    """The research loop: everything in this process, one tick after another. With `decode_for` (the
    source's), its JPEGs decode as the runtime's do with pipeline.scaled_decode (else in full)."""
    import torch

    from perception.rectify import Rectifier
    from runtime.prescale import Prescaler

    torch.set_num_threads(threads)
    model = factory.build_torch_model().prepare_for_inference()  # as the runtime's stages run it
    rect = Rectifier(model.config.rectify)
    if decode_for is not None:
        decode_for(Prescaler(model.config.rectify).needed_size)
    try:
        return _loop(model, rect, make_iter, warmup, threads)
    finally:
        if decode_for is not None:
            decode_for(None)


def _loop(model, rect, make_iter, warmup: int, threads: int) -> dict:
    """Ticks of `make_iter()` one after another: latencies, throughput, CPU, detections per tick."""
    import numpy as np
    import torch

    from perception.model import inputs_from_numpy
    from schema.messages import CAMERA_CHANNELS
    from schema.results import DetectionArrays, Polyline

    state = model.initial_state(1)
    tracker = model.new_tracker()  # as the runtime's BEV stage runs it (None with model.tracking off)
    lat, counts, t_start = [], [], None
    cpu0 = time.process_time()
    it = make_iter()
    i = 0
    while True:
        t0 = time.perf_counter()
        fs = next(it, None)
        if fs is None:
            break
        if i == warmup:
            t_start = t0
        frames = {c.channel: c for c in fs.cameras}
        # Missing cameras: a black image with the nominal calibration of a present one, masked out.
        ref = fs.cameras[0]
        imgs = [torch.from_numpy(np.array(frames.get(ch, ref).image)).permute(2, 0, 1) for ch in CAMERA_CHANNELS]
        out = rect(imgs, [frames.get(ch, ref).intrinsic for ch in CAMERA_CHANNELS],
                   [frames.get(ch, ref).sensor_to_ego.matrix for ch in CAMERA_CHANNELS])
        mask = np.array([ch in frames for ch in CAMERA_CHANNELS])
        inputs = inputs_from_numpy(out.images.numpy(), out.intrinsics.numpy(), out.cam_to_ego.numpy(), mask,
                                   fs.ego_to_global.matrix, fs.timestamp_us / 1e6, fs.kinematics.as_array(), fs.new_scene)
        with torch.no_grad():
            outputs, state = model(inputs, state)
            # The same outputs as the runtime's TickResult: seg labels at the model's seg resolution
            # (postprocess's default would upsample every camera's logits to the input size first).
            filters = None if tracker is None else [
                tracker.track_filter(fs.ego_to_global.matrix, fs.timestamp_us / 1e6, new_scene=fs.new_scene)]
            post = model.postprocess(outputs, seg_size=tuple(outputs.seg_logits.shape[-2:]), track_filters=filters)[0]
        d = post["detections"]
        DetectionArrays("ego", d.boxes.numpy(), d.scores.numpy(), d.labels.numpy(), d.names).to_global(fs.ego_to_global)
        [Polyline(cls, line).to_global(fs.ego_to_global) for cls, items in post["road"].items() for line in items]
        if i >= warmup:
            lat.append((time.perf_counter() - t0) * 1e3)
            counts.append(len(d))
        elif i == warmup - 1:
            cpu0 = time.process_time()
        i += 1
    wall = time.perf_counter() - t_start
    return {"threads": threads, "ticks": len(lat), "throughput_hz": len(lat) / wall, "latency_ms_median": statistics.median(lat),
            "latency_ms_p90": sorted(lat)[int(0.9 * (len(lat) - 1))], "detections": counts,
            "cpu_ms_per_tick": (time.process_time() - cpu0) * 1e3 / len(lat)}


def hop_costs(r) -> dict:
    """The runtime's own cost in one tick, hop by hop (ms): all time that is neither decoding nor model
    compute (the set's load and the prescale that the loop's rectifier does too are compute; 'put' and
    everything between the stages is the runtime's).
    - put: the images into the object store (driver);
    - to_submit: the loaded set handed to the event loop until its submission starts;
    - submit: building the tick's metadata and the call;
    - to_backbone: the call reaching the actor and its images resolved (Ray dispatch + object store read), up to
      the stage's decode of them (replay_decode: backbone) or its backbone;
    - backbone_to_bev: features handed from the backbone to the BEV step (in one process: a thread hand-over);
    - deliver: the result back to the driver (serialisation, transfer, the event loop's wake-up)."""
    by = {t.stage: t for t in r.timings}
    ms = lambda a, b: max(b - a, 0) / 1e6  # noqa: E731
    return {"put": ms(by["put"].start_ns, by["put"].end_ns) if "put" in by else 0.0,
            "to_submit": ms(by["ingest"].end_ns, by["submit"].start_ns),
            "submit": ms(by["submit"].start_ns, by["submit"].end_ns),
            # the stage's first work: decoding the set's JPEGs there (pipeline.replay_decode: backbone), else the backbone
            "to_backbone": ms(by["submit"].end_ns, by["decode" if "decode" in by else "backbone"].start_ns),
            "backbone_to_bev": ms(by["backbone"].end_ns, by["bev"].start_ns),
            "deliver": ms(by["bev"].end_ns, by["deliver"].end_ns)}


def runtime_run(cfg, make_iter, warmup: int, decode_for=None) -> dict:
    from runtime.api import Runtime
    from schema.results import TickResult

    class _Src:
        is_live = False

        def frame_sets(self):
            return make_iter()

        def describe(self):
            return "bench frames"

    source = _Src()
    if decode_for is not None:
        source.decode_for = decode_for  # pipeline.scaled_decode reaches the source

    import ray

    with Runtime(cfg) as rt:
        # one process for both stages (PerceptionActor) unless their placement differs: count it once
        actors = {"perception": rt.supervisor.bev} if rt.supervisor.fused else {"backbone": rt.supervisor.backbone,
                                                                                "bev": rt.supervisor.bev}
        cpu0, drv0 = ray.get([a.cpu_seconds.remote() for a in actors.values()]), time.process_time()
        records = list(rt.iterate(source))
        cpu1, drv1 = ray.get([a.cpu_seconds.remote() for a in actors.values()]), time.process_time()
    ticks = [r for r in records if isinstance(r, TickResult)]
    measured = ticks[warmup:]
    # The first measured tick starts loading (its "ingest"; a simulated set also carries the "sync" of its preloading).
    start = next(t.start_ns for t in measured[0].timings if t.stage == "ingest")
    end = max(t.end_ns for t in measured[-1].timings)
    lat = [r.latency_ms for r in measured]

    def gap(r, a: str, a_end: bool, b: str) -> float:  # ms from stage a's start/end to stage b's start
        by = {t.stage: t for t in r.timings}
        return ((by[b].start_ns if b != "deliver" else by[b].end_ns) - (by[a].end_ns if a_end else by[a].start_ns)) / 1e6

    hops = [hop_costs(r) for r in measured]
    n_all = max(len(records), 1)
    return {"ticks": len(measured), "dropped": len(records) - len(ticks),
            "throughput_hz": len(measured) / ((end - start) / 1e9), "latency_ms_median": statistics.median(lat),
            "latency_ms_p90": sorted(lat)[int(0.9 * (len(lat) - 1))],
            "detections": [len(r.detections_ego) for r in measured],
            # actors + driver over all ticks (warm-up included: the actors' clocks are per process)
            "cpu_ms_per_tick": (sum(cpu1) - sum(cpu0) + (drv1 - drv0)) * 1e3 / n_all,
            # per process: the driver's share is mostly ray.put of the set's images (26 MB at 1600x900)
            "cpu_ms_per_tick_by_process": {**{k: (b - a) * 1e3 / n_all for k, a, b in zip(actors, cpu0, cpu1)},
                                           "driver": (drv1 - drv0) * 1e3 / n_all},
            # the hand-overs between processes (Ray task dispatch, object-store transfer), medians in ms
            "handover_ms_median": {"submit_to_backbone": statistics.median(gap(r, "submit", True, "backbone") for r in measured),
                                   "backbone_to_bev": statistics.median(gap(r, "backbone", True, "bev") for r in measured),
                                   "bev_to_driver": statistics.median(gap(r, "bev", True, "deliver") for r in measured)},
            "stage_ms_median": {s: statistics.median(t.duration_ms for r in measured for t in r.timings if t.stage == s)
                                for s in ("ingest", "submit", "decode", "backbone", "bev", "deliver")
                                if any(t.stage == s for t in measured[0].timings)},
            # the runtime's own cost per tick, hop by hop (medians; their per-tick sum is "runtime_cost_ms")
            "hop_ms_median": {k: statistics.median(h[k] for h in hops) for k in hops[0]},
            "runtime_cost_ms_median": statistics.median(sum(h.values()) for h in hops),
            # the runtime's own share of a tick: latency minus the compute stages (load, decode, backbone, BEV):
            # Ray hand-overs, object-store transfers, waiting for a busy actor, the driver's event loop
            "outside_compute_ms_median": statistics.median(
                r.latency_ms - sum(t.duration_ms for t in r.timings if t.stage in ("ingest", "decode", "backbone", "bev"))
                for r in measured)}


def _med(xs, k):
    return statistics.median(x[k] for x in xs)


def add_same_decode_figures(result: dict, same: list, runs: list, overlapped: list | None, alt_n: int) -> None:
    """The honest comparator: the loop that decodes the JPEGs exactly as the runtime does (same source,
    same decode); throughput ratio and median latency overhead (a fraction: 0.05 = +5 %) against it, for
    the default config and with more ticks in flight; and the runtime's own cost per tick, hop by hop."""
    same_tp, same_lat = _med(same, "throughput_hz"), _med(same, "latency_ms_median")
    rt_tp, rt_lat = _med(runs, "throughput_hz"), _med(runs, "latency_ms_median")
    result["same_decode_loop"] = {"throughput_hz": same_tp, "latency_ms_median": same_lat,
                                  "torch_threads_best": [x["threads"] for x in same]}
    result["vs_same_decode_loop"] = {"throughput_ratio": rt_tp / same_tp, "latency_overhead": rt_lat / same_lat - 1.0}
    if overlapped:
        xs = overlapped
        result["overlapped_vs_same_decode_loop"] = {
            "replay_max_in_flight": alt_n, "throughput_hz": _med(xs, "throughput_hz"), "latency_ms_median": _med(xs, "latency_ms_median"),
            "throughput_ratio": _med(xs, "throughput_hz") / same_tp, "latency_overhead": _med(xs, "latency_ms_median") / same_lat - 1.0,
            "runtime_cost_ms_median": _med(xs, "runtime_cost_ms_median"), "hop_ms_median": xs[-1]["hop_ms_median"]}
    result["runtime_cost_ms_median"] = _med(runs, "runtime_cost_ms_median")
    result["runtime"]["hop_ms_median"] = {k: statistics.median(x["hop_ms_median"][k] for x in runs) for k in runs[0]["hop_ms_median"]}


def print_table(result: dict, pc, scaled: bool, alt_n: int) -> None:
    loop, rt = result["offline_loop"], result["runtime"]
    print(f"{'':<14}{'ticks/s':>10}{'median ms':>12}")
    print(f"{'offline loop':<14}{loop['throughput_hz']:>10.2f}{loop['latency_ms_median']:>12.1f}   (research code: full JPEG decode)")
    if scaled:
        ls = result["offline_loop_scaled_decode"]
        print(f"{'loop, scaled':<14}{ls['throughput_hz']:>10.2f}{ls['latency_ms_median']:>12.1f}   (the runtime's scaled decode; "
              f"runtime vs it: ratio {ls['runtime_throughput_ratio']:.2f}, latency {100 * ls['runtime_median_latency_overhead']:+.1f} %)")
    print(f"{'runtime':<14}{rt['throughput_hz']:>10.2f}{rt['latency_ms_median']:>12.1f}   (runtime.yaml: replay_max_in_flight "
          f"{pc.replay_max_in_flight}, read_ahead {pc.read_ahead}, scaled_decode {pc.scaled_decode})")
    for name, v in result["variants"].items():
        print(f"{'  ' + name:<14}{v['throughput_hz']:>10.2f}{v['latency_ms_median']:>12.1f}   (ratio {v['throughput_ratio']:.2f}, "
              f"latency overhead {100 * v['median_latency_overhead']:+.1f} %)")
    print(f"throughput ratio {result['throughput_ratio']:.2f}, median latency overhead {100 * result['median_latency_overhead']:+.1f} %, "
          f"same detections per tick: {result['same_detection_counts']}; {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}")
    v, o = result["vs_same_decode_loop"], result.get("overlapped_vs_same_decode_loop")
    print(f"vs the same-decode loop: default {v['throughput_ratio']:.2f}x at {100 * v['latency_overhead']:+.1f} % median latency"
          + (f"; overlapped ({alt_n} in flight) {o['throughput_ratio']:.2f}x at {100 * o['latency_overhead']:+.1f} %" if o else "")
          + f"; the runtime's own cost {result['runtime_cost_ms_median']:.2f} ms/tick (median), by hop: "
          + ", ".join(f"{k} {x:.2f}" for k, x in rt["hop_ms_median"].items()))


def bench_weights(tmp: str):
    """runtime.yaml's config and model factory, with weights both sides load: the configured or shipped
    ones, else a seeded random init written once to `tmp`. -> (cfg, factory, what the weights are)."""
    import torch

    from runtime.config import load_config
    from runtime.model_adapter import ModelFactory

    cfg = load_config()
    factory = ModelFactory.from_config(cfg.model)
    if factory.checkpoint is None:  # same random weights for both sides: one seeded checkpoint
        torch.manual_seed(0)
        model = ModelFactory(factory.options, None).build_torch_model()
        ckpt = Path(tmp) / "bench_weights.pt"
        from perception.config import model_config_to_dict

        # With its model config, so every process builds the same architecture (load_trained_model).
        torch.save({"model": model.state_dict(), "step": 0, "config": {"model": model_config_to_dict(model.config)}}, ckpt)
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"checkpoint": ckpt})})
        factory = ModelFactory.from_config(cfg.model)
        weights = "random init (seed 0), shared checkpoint"
    else:
        weights = str(factory.checkpoint)
    return cfg, factory, weights


def build_result(head: dict, loops: list, loops_scaled: list, runs: list, loop_tries: list, variants: dict,
                 measured: dict, cfg) -> dict:
    """The figures of runtime.json against the full-decode research loop (the same-decode loop's are added
    by add_same_decode_figures)."""
    med = _med
    scaled = bool(loops_scaled)
    loop_tp, rt_tp = med(loops, "throughput_hz"), med(runs, "throughput_hz")
    loop_lat, rt_lat = med(loops, "latency_ms_median"), med(runs, "latency_ms_median")
    # The runtime computes what the loop that decodes as it does computes.
    same_outputs = all(a["detections"] == b["detections"] for a, b in zip(loops_scaled if scaled else loops, runs))
    result = {
        **head,
        "offline_loop": {"throughput_hz": loop_tp, "latency_ms_median": loop_lat,
                         "torch_threads_best": [x["threads"] for x in loops],
                         "cpu_ms_per_tick": med(loops, "cpu_ms_per_tick"),
                         "seg_labels": "at the model's seg resolution, as in the runtime's results"},
        "runtime": {"throughput_hz": rt_tp, "latency_ms_median": rt_lat, "dropped": sum(x["dropped"] for x in runs),
                    "stage_ms_median": runs[-1]["stage_ms_median"], "cpu_ms_per_tick": med(runs, "cpu_ms_per_tick"),
                    "outside_compute_ms_median": med(runs, "outside_compute_ms_median"),
                    "cpu_ms_per_tick_by_process": runs[-1]["cpu_ms_per_tick_by_process"],
                    "handover_ms_median": runs[-1]["handover_ms_median"]},
        "per_repeat": {"offline_loop_each_thread_count": loop_tries,
                       "runtime": [{k: x[k] for k in ("throughput_hz", "latency_ms_median")} for x in runs]},
        "variants": {name: {"what": variants[name][2], "throughput_hz": med(xs, "throughput_hz"),
                            "latency_ms_median": med(xs, "latency_ms_median"),
                            "throughput_ratio": med(xs, "throughput_hz") / loop_tp,
                            "median_latency_overhead": med(xs, "latency_ms_median") / loop_lat - 1.0,
                            "outside_compute_ms_median": med(xs, "outside_compute_ms_median"),
                            "stage_ms_median": xs[-1]["stage_ms_median"],
                            "same_detection_counts_as_loop": all(a["detections"] == b["detections"] for a, b in zip(loops, xs))
                            if variants[name][1] is None else None}
                     for name, xs in measured.items() if xs},
        "throughput_ratio": rt_tp / loop_tp,
        "median_latency_overhead": rt_lat / loop_lat - 1.0,
        "same_detection_counts": same_outputs,
        "offline_loop_scaled_decode": ({
            "throughput_hz": med(loops_scaled, "throughput_hz"), "latency_ms_median": med(loops_scaled, "latency_ms_median"),
            "runtime_throughput_ratio": rt_tp / med(loops_scaled, "throughput_hz"),
            "runtime_median_latency_overhead": rt_lat / med(loops_scaled, "latency_ms_median") - 1.0,
            # what the decode changes in the outputs: detections per tick against the full decode's, summed |diff|
            "detection_count_changes_vs_full_decode": sum(abs(a - b) for a, b in zip(loops[0]["detections"], loops_scaled[0]["detections"])),
            "detections_full_decode": sum(loops[0]["detections"])} if scaled else None),
        "config": {"pipeline": cfg.pipeline.model_dump(), "stages": cfg.stages.model_dump(mode="json")},
        **provenance(),
    }
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--source", choices=("nuscenes", "sim"), default=None)
    ap.add_argument("--ticks", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None, help="alternating loop/runtime runs (median reported)")
    args = ap.parse_args()
    kind = args.source or ("nuscenes" if (REAL_SCENE / "v1.0-trainval").is_dir() else "sim")
    n = args.ticks or (8 if args.quick else 24)
    repeats = args.repeats or (1 if args.quick else 3)
    warmup = 2

    tmp = tempfile.TemporaryDirectory()
    cfg, factory, weights = bench_weights(tmp.name)
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"progress": False})})
    desc, make_iter, decode_for = frame_source(kind, n + warmup)
    # pipeline.scaled_decode: the runtime's JPEGs decode only as large as the rectifier uses them. The
    # baseline stays the research loop (full decode); the same loop with the runtime's decode is measured
    # beside it, so the table separates what the decode saves from what the pipeline costs.
    scaled = bool(cfg.pipeline.scaled_decode) and decode_for is not None
    rt_decode = decode_for if scaled else None
    print(f"frames: {desc}; {n} measured ticks after {warmup} warm-up; weights: {weights}; {repeats} repeat(s)", file=sys.stderr)

    loops, runs, loop_tries, loops_scaled = [], [], [], []
    # Variants of the runtime measured in the same run (not --quick), each against the same loop.
    pc = cfg.pipeline
    alt_n = 2 if pc.replay_max_in_flight == 1 else 1
    variants = {  # name -> (config, the source's decode_for or None, what it shows)
        f"replay_max_in_flight_{alt_n}": (cfg.model_copy(update={"pipeline": pc.model_copy(update={"replay_max_in_flight": alt_n})}),
                                          rt_decode, "the other cap on ticks in flight: what overlapping the actors costs or gains"),
        "read_ahead_1": (cfg.model_copy(update={"pipeline": pc.model_copy(update={"read_ahead": 1 if pc.read_ahead == 0 else 0})}),
                         rt_decode, "the other read_ahead: loading the next set while the actors work"),
    }
    if scaled:
        other = "driver" if pc.replay_decode == "backbone" else "backbone"
        variants[f"replay_decode_{other}"] = (cfg.model_copy(update={"pipeline": pc.model_copy(update={"replay_decode": other})}),
                                              rt_decode, "the other place to decode a replay's JPEGs (same pixels)")
        variants["full_decode"] = (cfg.model_copy(update={"pipeline": pc.model_copy(update={"scaled_decode": False})}), None,
                                   "pipeline.scaled_decode false: the research loop's pixels, so what the pipeline alone costs")
    measured = {name: [] for name in variants}
    thread_options = sorted({1, os.cpu_count() or 1})  # (--quick too: the comparator gets its best)
    overlapped = f"replay_max_in_flight_{alt_n}" if alt_n > 1 else None
    def loop_best(r: int) -> None:
        # The baseline gets its best torch thread count (1 or all cores) in each repeat.
        tries = [offline_loop(factory, make_iter, warmup, t) for t in thread_options]
        for t in tries:
            print(f"  loop    #{r} ({t['threads']} thread(s)): {t['throughput_hz']:.2f} ticks/s, "
                  f"median {t['latency_ms_median']:.0f} ms", file=sys.stderr)
        loops.append(max(tries, key=lambda t: t["throughput_hz"]))
        loop_tries.append([{k: t[k] for k in ("threads", "throughput_hz", "latency_ms_median", "cpu_ms_per_tick")} for t in tries])
        if scaled:
            tries = [offline_loop(factory, make_iter, warmup, t, decode_for) for t in thread_options]
            loops_scaled.append(max(tries, key=lambda t: t["throughput_hz"]))
            print(f"  loop, scaled decode #{r} ({loops_scaled[-1]['threads']} thread(s)): {loops_scaled[-1]['throughput_hz']:.2f} "
                  f"ticks/s, median {loops_scaled[-1]['latency_ms_median']:.0f} ms", file=sys.stderr)

    def runtime_default(r: int) -> None:
        runs.append(runtime_run(cfg, make_iter, warmup, rt_decode))
        print(f"  runtime #{r}: {runs[-1]['throughput_hz']:.2f} ticks/s, median {runs[-1]['latency_ms_median']:.0f} ms", file=sys.stderr)

    for r in range(repeats):
        # Interleaved, order alternating per repeat: a drift in machine load hits both sides alike.
        for side in ((loop_best, runtime_default) if r % 2 == 0 else (runtime_default, loop_best)):
            side(r)
        for name, (vcfg, vdecode, _) in ({k: v for k, v in variants.items() if k == overlapped} if args.quick else variants).items():
            measured[name].append(runtime_run(vcfg, make_iter, warmup, vdecode))
            print(f"  runtime, {name} #{r}: {measured[name][-1]['throughput_hz']:.2f} ticks/s, "
                  f"median {measured[name][-1]['latency_ms_median']:.0f} ms", file=sys.stderr)

    result = build_result({"frames": desc, "ticks": n, "warmup": warmup, "repeats": repeats, "weights": weights},
                          loops, loops_scaled, runs, loop_tries, variants, measured, cfg)
    add_same_decode_figures(result, loops_scaled if scaled else loops, runs, measured.get(overlapped) if overlapped else None, alt_n)
    print_table(result, pc, scaled, alt_n)
    out = ROOT / "bench" / "results" / "runtime.json"
    out.write_text(relative(json.dumps(result, indent=2)))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
