"""The op-level breakdown of a model stage (`bevstream profile --ops`): torch.profiler over its calls.

It runs in this process on the model adapter the actors build (the same factory, weights, preparation for
inference and torch threads), on the source's own frame sets, through the same stage classes the actors
wrap (runtime/stages.py): the ops and their shares are the actor's; only the Ray hand-overs are absent. The
profiler is on for the profiled stage's calls only, after one warm-up call; it slows them down, so its
table gives shares and counts, while the latency figures come from the run without it.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable

from runtime.config import RuntimeConfig
from schema.messages import FrameSet

MODEL_STAGES = ("backbone", "bev")


def slowest_model_stage(medians: dict[str, float]) -> str:
    """The model stage with the largest median (ms); per-camera encodings count as the backbone's."""
    by_stage = {s: medians.get(s, 0.0) for s in MODEL_STAGES}
    by_stage["backbone"] = max(by_stage["backbone"], medians.get("backbone_camera", 0.0))
    return max(MODEL_STAGES, key=lambda s: by_stage[s])


def op_breakdown(cfg: RuntimeConfig, frame_sets: Iterable[FrameSet], stage: str, ticks: int = 4, live: bool = False,
                 model_factory: Callable[[], Any] | None = None, row_limit: int = 20) -> tuple[str, list[dict]]:
    """torch.profiler over `ticks` calls of `stage` ('backbone' or 'bev') on the first frame sets.
    -> (the profiler's table, sorted by self CPU time; the top ops as dicts)."""
    if stage not in MODEL_STAGES:
        raise ValueError(f"--ops profiles a model stage, one of {MODEL_STAGES}; got {stage!r}")
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from runtime.model_factory import model_factory as configured_factory
    from runtime.stages import BackboneStage, BevStage, TickMeta
    from runtime.supervisor import torch_threads

    sets = list(itertools.islice(frame_sets, ticks + 1))  # the first warms up
    if len(sets) < 2:
        raise ValueError(f"--ops needs at least 2 frame sets from the source, got {len(sets)}")
    torch.set_num_threads(torch_threads(getattr(cfg.stages, stage), cfg, live))
    model = (model_factory or configured_factory(cfg, check=False))()  # model.factory's, else the shipped network
    backbone, bev = BackboneStage(model, cfg.pipeline.seg_stride), BevStage(model)
    metas = [TickMeta.from_frame_set(fs) for fs in sets]
    images = [[c.image for c in fs.cameras] for fs in sets]
    backbone.run(images[0], metas[0])
    packets = [backbone.run(im, m) for im, m in zip(images, metas)] if stage == "bev" else []
    if stage == "bev":
        bev.run(packets[0], metas[0])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for k in range(1, len(sets)):
            with record_function(f"bevstream.{stage}"):
                if stage == "backbone":
                    backbone.run(images[k], metas[k])
                else:
                    bev.run(packets[k], metas[k])
    averages = prof.key_averages()
    table = averages.table(sort_by="self_cpu_time_total", row_limit=row_limit)
    calls = len(sets) - 1
    total = sum(e.self_cpu_time_total for e in averages) or 1.0
    top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:row_limit]
    rows = [{"op": e.key, "calls_per_tick": e.count / calls, "self_cpu_ms_per_tick": e.self_cpu_time_total / 1e3 / calls,
             "self_cpu_percent": 100.0 * e.self_cpu_time_total / total} for e in top]
    return table, rows
