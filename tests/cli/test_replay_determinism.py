"""Determinism: two `bevstream replay` runs of the same input (the real scene's keyframes, fresh actors each
time) write byte-identical results_nusc.json and results_tracking.json, whether the JPEGs decode in the
backbone stage (pipeline.replay_decode: backbone, the default) or in the driver. Timings live only in
ticks.jsonl and summary.json, which are not compared."""
from __future__ import annotations

import hashlib
import json

from cli.main import main
from runtime.config import DEFAULT_CONFIG


def test_two_replays_of_the_same_input_write_identical_submissions(ray_session, real_scene_root, tmp_path):
    digests = []
    in_driver = tmp_path / "driver.yaml"  # the default configuration with the other place to decode
    text = DEFAULT_CONFIG.read_text()
    assert "replay_decode: backbone" in text
    in_driver.write_text(text.replace("replay_decode: backbone", "replay_decode: driver"))
    for run, config in (("a", DEFAULT_CONFIG), ("b", in_driver)):
        out = tmp_path / run
        rc = main(["replay", "--config", str(config), "--dataroot", str(real_scene_root), "--version", "v1.0-trainval",
                   "--keyframes-only", "--out", str(out), "--no-progress"])
        assert rc == 0
        files = sorted(p.name for p in out.glob("results_*.json"))
        assert "results_nusc.json" in files
        digests.append({name: hashlib.md5((out / name).read_bytes()).hexdigest() for name in files})
    assert digests[0] == digests[1]
    for run, decoded_in_stage in (("a", True), ("b", False)):  # each ran where it says
        first = json.loads((tmp_path / run / "ticks.jsonl").read_text().splitlines()[0])
        assert ("decode" in [t["stage"] for t in first["timings"]]) == decoded_in_stage
    results = json.loads((tmp_path / "a" / "results_nusc.json").read_text())["results"]
    assert sum(len(boxes) for boxes in results.values()) > 0  # identical and not trivially empty
