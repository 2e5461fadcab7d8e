"""The profile's pictures are written as images of the expected size; the accuracy-latency plot takes a table."""
from __future__ import annotations

import pytest
from PIL import Image

from lab.profile_plots import accuracy_latency_png, profile_pngs
from tests.runtime.profiling.test_trace import live_ticks


def test_profile_pngs_are_images(tmp_path):
    paths = profile_pngs(live_ticks(), True, tmp_path, 83.3, label="A")
    assert [p.name for p in paths] == ["A_stages.png", "A_end_to_end.png"]
    for p in paths:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] >= 300


def test_accuracy_against_latency_takes_a_profile_by_budget_table(tmp_path):
    rows = [{"label": "small@1cpu", "latency_ms": 120.0, "nds_offline": 0.31, "nds_streaming": 0.27},
            {"label": "tiny@2cpu", "latency_ms": 60.0, "nds_offline": 0.22, "nds_streaming": None}]
    with Image.open(accuracy_latency_png(rows, tmp_path / "acc.png", budget_ms=83.3)) as im:
        assert im.format == "PNG"
    with pytest.raises(ValueError, match="empty table"):
        accuracy_latency_png([], tmp_path / "x.png")
