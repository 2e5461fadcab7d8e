"""`bevstream stream --record` end to end: the live simulated vehicle through the runtime, its run.mcap read
back with the `mcap` reader (one scene message per tick, the cameras, the timing plot's topic), the layout
beside it."""
from __future__ import annotations

import json

from mcap.reader import make_reader

from cli.main import main


def test_stream_record_writes_a_foxglove_recording(ray_session, tmp_path):
    out = tmp_path / "live"
    assert main(["stream", "--seconds", "2", "--out", str(out), "--no-progress", "--record"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    counts: dict[str, int] = {}
    last: dict[str, int] = {}
    with open(out / "run.mcap", "rb") as f:
        for _, channel, message in make_reader(f).iter_messages(log_time_order=False):
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            assert message.log_time >= last.get(channel.topic, 0), channel.topic
            last[channel.topic] = message.log_time
    assert counts["/scene"] == summary["ticks"] >= 1  # one scene message per tick
    assert counts["/timing"] == summary["frame_sets"]
    assert counts.get("/drops", 0) == summary["dropped"]
    assert {"/CAM_FRONT/image", "/CAM_FRONT/calibration", "/tf"} <= set(counts)
    assert json.loads((out / "foxglove-layout.json").read_text())["content"]["type"] == "split"
