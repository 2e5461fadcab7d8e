"""`bevstream profile` end to end: the live vehicle through the ingest actor (a well-formed trace with a track
per camera, the budget table, the pictures), and `--compare` of two configurations on the real scene."""
from __future__ import annotations

import json

from cli.main import main
from tests.runtime.profiling.trace_format import check_trace


def test_profile_live_vehicle_writes_a_perfetto_trace_table_and_pictures(ray_session, tmp_path):
    trace = tmp_path / "trace.json"
    out = tmp_path / "prof"
    per_camera = tmp_path / "per_camera.yaml"  # each camera encoded as it arrives: the trace gets a track per camera
    per_camera.write_text("pipeline: {live_encode: camera}\n")
    rc = main(["profile", "--config", str(per_camera), "--ticks", "6", "--out", str(out), "--trace", str(trace),
               "--no-progress"])
    assert rc == 0
    doc = json.loads(trace.read_text())
    assert check_trace(doc) == []
    events = doc["traceEvents"]
    tracks = {e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    assert {"ingest", "backbone", "bev", "sensor->ingest", "end to end", "CAM_FRONT"} <= tracks
    assert any(e["ph"] == "f" for e in events)
    prof = json.loads((out / "profile.json").read_text())
    assert prof["end_to_end_ms"] and "deadline_misses" in prof
    e2e = next(r for r in prof["budgets"] if r["stage"] == "end_to_end")
    assert e2e["misses"] == prof["deadline_misses"] and e2e["budget_ms"] == prof["deadline_ms"]
    assert (out / "stages.png").stat().st_size > 0 and (out / "end_to_end.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert "ingest" in summary["placement"] and summary["ticks"] + summary["dropped"] == summary["frame_sets"]


def test_profile_compare_runs_two_configurations_on_the_same_replay(ray_session, real_scene_root, tmp_path, capsys):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("profile: {ticks: 3, warmup: 1}\n")
    b.write_text("profile: {ticks: 50, warmup: 9}\npipeline: {replay_max_in_flight: 2}\n")  # A's ticks and warm-up win
    out = tmp_path / "cmp"
    rc = main(["profile", "--compare", str(a), str(b), "--dataroot", str(real_scene_root), "--version", "v1.0-trainval",
               "--out", str(out), "--no-progress", "--no-plots"])
    assert rc == 0
    cmp = json.loads((out / "compare.json").read_text())
    rows = {r["stage"]: r for r in cmp["stages"]}
    assert {"backbone", "bev", "end_to_end"} <= set(rows)
    assert all(r["ratio"] == r["b_ms"] / r["a_ms"] for r in rows.values() if r["a_ms"] > 0)
    for side in ("A", "B"):
        prof = json.loads((out / side / "profile.json").read_text())
        assert prof["ticks"] == 3 and prof["warmup"] == 1
        assert check_trace(json.loads((out / side / "trace.json").read_text())) == []
    assert "B/A" in capsys.readouterr().out
    assert main(["profile", "--compare", str(a), str(tmp_path / "missing.yaml"), "--no-progress"]) == 2
