"""`bevstream replay --realtime --compensate velocity` writes results_streaming.json that the devkit loads, and
`bevstream eval --streaming RUN` prints offline and streaming side by side; misuse gets one clear error."""
from __future__ import annotations

import json
import shutil

import pytest

from cli.main import main

# One mini_val scene of 2.5 s with every 12 Hz camera cycle a sample (as tests/replay/export/test_every_frame.py)
CONFIG = dict(scenes=1, seed=1, split="val", version="v1.0-mini", width=160, height=90, duration_s=2.5, workers=1)


@pytest.fixture(scope="module")
def every_frame_root(tmp_path_factory):
    from replay.export.dataset import ExportConfig, export_dataset

    cfg = ExportConfig(out=tmp_path_factory.mktemp("every_frame"), annotate_every_frame=True, **CONFIG)
    export_dataset(cfg)
    return cfg.out


def test_realtime_replay_then_streaming_eval(ray_session, every_frame_root, tmp_path, capsys):
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.nuscenes import NuScenes

    from lab.streaming import build_streaming

    run = tmp_path / "run"
    assert main(["replay", "--dataroot", str(every_frame_root), "--version", "v1.0-mini", "--realtime",
                 "--compensate", "velocity", "--out", str(run), "--no-progress"]) == 0
    nusc = NuScenes("v1.0-mini", str(every_frame_root), verbose=False)
    offline = json.loads((run / "results_nusc.json").read_text())["results"]
    boxes, meta = load_prediction(str(run / "results_streaming.json"), 500, DetectionBox)
    assert set(boxes.sample_tokens) == set(offline) == {s["token"] for s in nusc.sample} and meta["use_camera"]
    clock = json.loads((run / "summary.json").read_text())["source_stats"]["clock"]
    assert [a["scene"] for a in clock] == [s["name"] for s in nusc.scene]
    record = json.loads((run / "streaming.json").read_text())
    assert record["compensate"] == "velocity" and record["empty_samples"] >= 1  # the first sample: nothing delivered
    used = [u for u in record["used"].values() if u is not None]
    assert used and all(u["age_ms"] > 0 for u in used)  # a tick is never its own sample's output in time
    written = json.loads((run / "results_streaming.json").read_text())["results"]
    assert build_streaming(run, nusc, "velocity")[0] == written  # a pure function of the run directory

    # its own column: 'offline' unless the paced run passed over late cycles (skip_late), then 'own tick' with a note
    skipped = json.loads((run / "summary.json").read_text())["source_stats"].get("late_skipped", 0)
    capsys.readouterr()
    assert main(["eval", "--streaming", str(run), "--out", str(tmp_path / "own")]) == 0
    out = capsys.readouterr().out
    own = "own tick" if skipped else "offline"
    assert next(line for line in out.splitlines() if "streaming+velocity" in line).split() == own.split() + [
        "streaming", "streaming+velocity"]
    assert ("passed over" in out) == bool(skipped)
    # --results: the offline column scores that file (here the same one, so the same NDS), named offline
    capsys.readouterr()
    assert main(["eval", "--streaming", str(run), "--results", str(run / "results_nusc.json"),
                 "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "offline" in line)
    assert header.split() == ["offline", "streaming", "streaming+velocity"]
    for row in ("NDS", "mAP", "mATE", "mAVE", "age p50 (ms)", "age p99 (ms)"):
        assert any(line.startswith(row) and len(line.split()) == len(row.split()) + 3 for line in out.splitlines()), row
    report = json.loads((tmp_path / "eval" / "report.json").read_text())["streaming"]
    assert set(report) == {"offline", "streaming", "streaming+velocity"}
    assert report["streaming"]["age_ms"] == report["streaming+velocity"]["age_ms"] == record["age_ms"]
    assert 0.0 <= report["streaming"]["detection"]["NDS"] <= 1.0
    own_report = json.loads((tmp_path / "own" / "report.json").read_text())["streaming"]
    assert own_report[own]["detection"]["NDS"] == report["offline"]["detection"]["NDS"]

    # a run without the clock (not paced) cannot be scored as streaming: one clear error
    unpaced = tmp_path / "unpaced"
    shutil.copytree(run, unpaced)
    summary = json.loads((unpaced / "summary.json").read_text())
    summary.pop("source_stats")
    (unpaced / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert main(["eval", "--streaming", str(unpaced), "--out", str(tmp_path / "eval2")]) == 2
    assert "--realtime" in capsys.readouterr().err


def test_streaming_arguments_are_checked(every_frame_root, tmp_path, capsys):
    assert main(["replay", "--dataroot", str(every_frame_root), "--version", "v1.0-mini", "--compensate", "velocity",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "--compensate needs --realtime" in capsys.readouterr().err
    assert main(["eval", "--streaming", str(tmp_path / "nowhere")]) == 2
    assert "summary.json not found" in capsys.readouterr().err
    assert main(["eval", "--streaming", str(tmp_path), "--tracking-results", str(tmp_path / "x.json")]) == 2
    assert "does not go with --tracking-results" in capsys.readouterr().err
    assert main(["eval", "--version", "v1.0-mini"]) == 2
    assert "--dataroot is required" in capsys.readouterr().err
