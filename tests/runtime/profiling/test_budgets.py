"""The budget table against numpy and a hand count; the critical path sums to the tick's wall time;
profile.budgets_ms is validated."""
from __future__ import annotations

import random

import numpy as np
import pytest

from runtime.config import ConfigError, config_from_dict, load_config
from runtime.profiling.budgets import END_TO_END, budget_table, critical_path, format_budget_table
from tests.runtime.profiling.test_trace import tick

BUDGETS = {"backbone": 30.0, "bev": 50.0}


def ticks(n: int = 20, seed: int = 0) -> list:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        b, v = rng.uniform(10, 60), rng.uniform(20, 90)
        out.append(tick(k, 10**12 + k * 10**8, [("ingest", 0, 2), ("submit", 2, 3), ("backbone", 3, 3 + b),
                                                ("bev", 3 + b, 3 + b + v), ("deliver", 3 + b + v, 5 + b + v)]))
    return out


def test_the_table_matches_numpy_percentiles_and_a_hand_count_of_misses():
    recs = ticks()
    rows = {r.stage: r for r in budget_table(recs, live=True, budgets_ms=BUDGETS, deadline_ms=120.0)}
    assert list(rows) == ["ingest", "submit", "backbone", "bev", "deliver", END_TO_END]
    bev = np.array([t.duration_ms for r in recs for t in r.timings if t.stage == "bev"])
    assert rows["bev"].p50 == pytest.approx(np.percentile(bev, 50)) and rows["bev"].max == pytest.approx(bev.max())
    assert rows["bev"].misses == int((bev > 50.0).sum()) and rows["bev"].budget_ms == 50.0
    e2e = np.array([r.end_to_end_ms for r in recs])  # live: from the oldest exposure, 40 ms before the set
    assert rows[END_TO_END].misses == int((e2e > 120.0).sum()) and rows[END_TO_END].budget_ms == 120.0
    assert rows["ingest"].budget_ms is None and rows["ingest"].misses == 0
    assert rows["bev"].miss_percent == pytest.approx(100.0 * rows["bev"].misses / 20)
    assert "end to end" in format_budget_table(list(rows.values()), live=True)


def test_a_replay_measures_end_to_end_as_the_work_latency():
    recs = ticks(5)
    row = budget_table(recs, live=False, budgets_ms={}, deadline_ms=1.0)[-1]
    assert row.stage == END_TO_END and row.p50 == pytest.approx(np.median([r.latency_ms for r in recs]))


@pytest.mark.parametrize("live", [True, False])
def test_the_critical_path_pieces_sum_to_the_ticks_wall_time(live):
    """Property over random (also overlapping) stages: the pieces are >= 0 and add up to the wall time."""
    rng = random.Random(1)
    for k in range(50):
        stages, t = [], rng.uniform(0, 5)
        for s in ("sync", "ingest", "submit", "backbone", "bev", "deliver"):
            d = rng.uniform(0, 40)
            stages.append((s, t, t + d))
            t += rng.uniform(-d, d + 10)
        r = tick(k, 10**12, stages)
        pieces = critical_path(r, live)
        wall = r.end_to_end_ms if live else (max(x.end_ns for x in r.timings) - min(x.start_ns for x in r.timings)) / 1e6
        assert min(pieces.values()) >= 0 and sum(pieces.values()) == pytest.approx(wall, abs=1e-6)


def test_the_critical_path_of_a_plain_chain_is_its_stages_and_the_gaps():
    r = tick(0, 10**12, [("ingest", 0, 2), ("submit", 5, 6), ("backbone", 6, 36), ("bev", 30, 80), ("deliver", 80, 81)])
    p = critical_path(r, live=True)
    assert p["bev"] == pytest.approx(50) and p["backbone"] == pytest.approx(24)  # its last 6 ms are the BEV step's
    assert p["waiting"] == pytest.approx(3) and p["before ingest"] == pytest.approx(40)  # exposure 40 ms before


def test_budgets_are_validated_and_documented_in_runtime_yaml():
    assert load_config().profile.budgets_ms["bev"] > 0
    with pytest.raises(ConfigError, match=r"profile.budgets_ms.*unknown stage.*'bevv'"):
        config_from_dict({"profile": {"budgets_ms": {"bevv": 3.0}}})
    with pytest.raises(ConfigError, match=r"profile.budgets_ms.*> 0"):
        config_from_dict({"profile": {"budgets_ms": {"bev": 0}}})
    with pytest.raises(ConfigError, match=r"profile.budgets_ms"):
        config_from_dict({"profile": {"budgets_ms": {"bev": "fast"}}})
