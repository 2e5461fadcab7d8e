"""One profiled run of a configuration (`bevstream profile`), its outputs, and two runs compared.

A run is the runtime as it serves (the same actors, the same timings every run records): the profile
adds nothing to the tick path; it keeps the records, drops the warm-up ticks from the figures and turns
the rest into tables, a trace and (lab/profile_plots.py) pictures.
"""
from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from runtime.config import RuntimeConfig
from runtime.profiling.budgets import END_TO_END, StageRow, budget_table, format_budget_table, stage_samples
from runtime.profiling.trace import TraceLayout, trace_layout, write_trace
from runtime.report import RunReport
from schema.results import DropRecord, TickResult

Record = TickResult | DropRecord


@dataclass
class ProfileRun:
    """The records of one profiled run, in frame order; the first `warmup` are not measured."""

    label: str
    cfg: RuntimeConfig
    live: bool
    records: list[Record]
    layout: TraceLayout
    placement: dict[str, str] = field(default_factory=dict)

    @property
    def measured(self) -> list[Record]:
        return self.records[self.cfg.profile.warmup:]

    def report(self) -> RunReport:
        rep = RunReport(self.live, deadline_ms=self.cfg.profile.deadline_ms)
        for r in self.measured:
            rep.add(r)
        return rep

    def table(self) -> list[StageRow]:
        p = self.cfg.profile
        return budget_table(self.measured, self.live, p.budgets_ms, p.deadline_ms)

    def medians(self) -> dict[str, float]:
        """Stage (and end to end) -> median ms over the measured ticks."""
        return {k: statistics.median(v) for k, v in stage_samples(self.measured, self.live).items()}


def sized_for_profile(cfg: RuntimeConfig) -> RuntimeConfig:
    """The live vehicle streams just long enough for the warm-up and the measured ticks."""
    p, live = cfg.profile, cfg.source.live
    return cfg.model_copy(update={"source": cfg.source.model_copy(update={
        "live": live.model_copy(update={"duration_s": (p.ticks + p.warmup) / live.rate_hz})})})


def profile_run(cfg: RuntimeConfig, source: Any, label: str = "", model_factory: Callable[[], Any] | None = None,
                out_dir: Path | None = None) -> ProfileRun:
    """Run `source` through a Runtime of `cfg` until warm-up + ticks frame sets ended (a live source: until it
    ends). -> its records sorted by frame id."""
    from tqdm import tqdm

    from runtime.api import Runtime
    from runtime.supervisor import stages_fused

    live = bool(source.is_live)
    p = cfg.profile
    records: list[Record] = []
    print(f"{label + ': ' if label else ''}source: {source.describe()}", file=sys.stderr)
    with Runtime(cfg, model_factory=model_factory) as rt:
        placement = rt.placement()
        with tqdm(unit="tick", disable=not cfg.output.progress, file=sys.stderr, desc=label or None) as bar:
            for record in rt.iterate(source, out_dir=out_dir or Path(cfg.output.out_dir)):
                records.append(record)
                bar.update(1)
                if len(records) >= p.ticks + p.warmup and not live:
                    break
    layout = trace_layout(live, ingest_actor=cfg.pipeline.live_ingest == "actor", fused=stages_fused(cfg))
    return ProfileRun(label, cfg, live, sorted(records, key=lambda r: r.frame_id), layout, placement)


def write_profile(run: ProfileRun, out_dir: Path, trace_path: Path | None = None) -> dict[str, Path]:
    """profile.json (the run summary + the budget table) and the trace (all records, warm-up included)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = run.report().summary()
    summary.update(warmup=run.cfg.profile.warmup, budgets=[r.to_json() for r in run.table()], placement=run.placement)
    paths = {"profile": out_dir / "profile.json"}
    paths["profile"].write_text(json.dumps(summary, indent=2))
    paths["trace"] = write_trace(trace_path or run.cfg.profile.trace, run.records, run.live, run.layout)
    return paths


def format_run(run: ProfileRun) -> str:
    rep = run.report()
    return "\n".join([f"profile of {rep.total} frame sets after {run.cfg.profile.warmup} warm-up:", rep.format(),
                      "budgets", format_budget_table(run.table(), run.live)])


def aligned_with(a: RuntimeConfig, b: RuntimeConfig) -> RuntimeConfig:
    """B for a comparison with A: A's source (the same frames) and A's ticks and warm-up; the rest is B's."""
    return b.model_copy(update={"source": a.source, "profile": b.profile.model_copy(update={
        "ticks": a.profile.ticks, "warmup": a.profile.warmup})})


def compare(a: ProfileRun, b: ProfileRun) -> list[dict]:
    """Per stage (and end to end): the medians of A and B and the ratio B / A."""
    ma, mb = a.medians(), b.medians()
    stages = [s for s in ma if s in mb and s != END_TO_END] + ([END_TO_END] if END_TO_END in ma and END_TO_END in mb else [])
    return [{"stage": s, "a_ms": ma[s], "b_ms": mb[s], "ratio": mb[s] / ma[s] if ma[s] > 0 else None} for s in stages]


def format_comparison(rows: list[dict], a: str, b: str) -> str:
    lines = [f"  {'stage (median ms)':<18}{'A':>9}{'B':>9}{'B/A':>8}"]
    for r in rows:
        ratio = f"{r['ratio']:8.2f}" if r["ratio"] is not None else f"{'-':>8}"
        lines.append(f"  {r['stage']:<18}{r['a_ms']:9.1f}{r['b_ms']:9.1f}{ratio}")
    return "\n".join(lines + [f"  A = {a}", f"  B = {b}"])
