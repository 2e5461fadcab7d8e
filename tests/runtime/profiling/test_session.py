"""A profiled run's figures leave out the warm-up; write_profile writes the table and a well-formed trace;
two runs compare stage by stage."""
from __future__ import annotations

import json

import pytest

from runtime.config import load_config
from runtime.profiling.session import ProfileRun, aligned_with, compare, format_comparison, sized_for_profile, write_profile
from runtime.profiling.trace import trace_layout
from tests.runtime.profiling.test_trace import live_ticks, tick
from tests.runtime.profiling.trace_format import check_trace


def run_of(bev_ms: list[float], warmup: int = 1, label: str = "") -> ProfileRun:
    cfg = load_config(overrides={"profile.warmup": warmup})
    recs = [tick(k, 10**12 + k * 10**9, [("ingest", 0, 1), ("backbone", 1, 21), ("bev", 21, 21 + b), ("deliver", 21 + b, 22 + b)])
            for k, b in enumerate(bev_ms)]
    return ProfileRun(label, cfg, True, recs, trace_layout(True))


def test_the_warm_up_is_not_measured():
    run = run_of([500.0, 40.0, 60.0, 50.0], warmup=1)
    assert run.medians()["bev"] == pytest.approx(50.0)
    assert run.report().summary()["ticks"] == 3
    assert next(r for r in run.table() if r.stage == "bev").max == pytest.approx(60.0)


def test_compare_gives_medians_and_ratios_per_stage():
    a, b = run_of([0, 40, 40, 40]), run_of([0, 20, 20, 20])
    rows = {r["stage"]: r for r in compare(a, b)}
    assert rows["bev"]["ratio"] == pytest.approx(0.5) and rows["backbone"]["ratio"] == pytest.approx(1.0)
    assert rows["end_to_end"]["b_ms"] == pytest.approx(rows["end_to_end"]["a_ms"] - 20)
    assert list(rows)[-1] == "end_to_end"
    assert "0.50" in format_comparison(list(rows.values()), "a.yaml", "b.yaml")


def test_write_profile_writes_the_budget_table_and_a_well_formed_trace(tmp_path):
    run = ProfileRun("", load_config(overrides={"profile.warmup": 0}), True, live_ticks(), trace_layout(True))
    paths = write_profile(run, tmp_path, tmp_path / "t.json")
    prof = json.loads(paths["profile"].read_text())
    bev = next(r for r in prof["budgets"] if r["stage"] == "bev")
    assert bev["budget_ms"] == run.cfg.profile.budgets_ms["bev"] and bev["misses"] == 4  # 65 ms each > 45
    assert check_trace(json.loads(paths["trace"].read_text())) == []


def test_the_vehicle_streams_long_enough_for_warm_up_and_ticks():
    cfg = sized_for_profile(load_config(overrides={"profile.ticks": 20, "profile.warmup": 4, "source.live.rate_hz": 12.0}))
    assert cfg.source.live.duration_s * cfg.source.live.rate_hz == pytest.approx(24)


def test_b_is_compared_on_as_source_ticks_and_warm_up_with_its_own_pipeline():
    a = load_config(overrides={"source.live.seed": 7, "profile.ticks": 5, "profile.warmup": 2})
    b = load_config(overrides={"source.live.seed": 9, "profile.ticks": 50, "pipeline.max_in_flight": 3,
                               "profile.budgets_ms": {"bev": 99.0}})
    b2 = aligned_with(a, b)
    assert b2.source == a.source and (b2.profile.ticks, b2.profile.warmup) == (5, 2)
    assert b2.pipeline.max_in_flight == 3 and b2.profile.budgets_ms == {"bev": 99.0}
