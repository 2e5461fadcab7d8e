"""Determinism: two `bevstream replay` runs of the same input (the real scene's keyframes, fresh actors each
time) write byte-identical results_nusc.json and results_tracking.json. Timings live only in ticks.jsonl and
summary.json, which are not compared."""
from __future__ import annotations

import hashlib
import json

from cli.main import main


def test_two_replays_of_the_same_input_write_identical_submissions(ray_session, real_scene_root, tmp_path):
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        rc = main(["replay", "--dataroot", str(real_scene_root), "--version", "v1.0-trainval", "--keyframes-only",
                   "--out", str(out), "--no-progress"])
        assert rc == 0
        files = sorted(p.name for p in out.glob("results_*.json"))
        assert "results_nusc.json" in files
        digests.append({name: hashlib.md5((out / name).read_bytes()).hexdigest() for name in files})
    assert digests[0] == digests[1]
    results = json.loads((tmp_path / "a" / "results_nusc.json").read_text())["results"]
    assert sum(len(boxes) for boxes in results.values()) > 0  # identical and not trivially empty
