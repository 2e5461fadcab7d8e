"""--ops: the slowest model stage is chosen from the medians; the breakdown profiles that stage's real
calls on the actors' model (its convolutions show up, its shares add up)."""
from __future__ import annotations

import pytest

from runtime.config import load_config
from runtime.profiling.ops import op_breakdown, slowest_model_stage


def test_the_slowest_model_stage_counts_per_camera_encodings_as_the_backbone():
    assert slowest_model_stage({"ingest": 500.0, "backbone": 30.0, "bev": 80.0}) == "bev"
    assert slowest_model_stage({"backbone": 30.0, "backbone_camera": 90.0, "bev": 80.0}) == "backbone"


@pytest.mark.timeout(300)
def test_the_op_breakdown_of_the_backbone_shows_its_convolutions():
    from replay.sim.vehicle import SimulatedVehicle

    cfg = load_config()
    vehicle = SimulatedVehicle(seed=1, width=352, height=198, rate_hz=12.0, duration_s=1.0, jitter_ms=0.0,
                               late_prob=0.0, drop_prob=0.0, realtime=False)
    table, rows = op_breakdown(cfg, vehicle.frame_sets(), "backbone", ticks=2, live=True, row_limit=100)
    ops = {r["op"] for r in rows}
    assert "bevstream.backbone" in ops and any("conv" in op for op in ops)
    assert sum(r["self_cpu_percent"] for r in rows) == pytest.approx(100.0, abs=1.0)
    assert "Self CPU" in table
    with pytest.raises(ValueError, match="model stage"):
        op_breakdown(cfg, iter(()), "ingest")
