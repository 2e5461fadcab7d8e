"""Runs on an existing Ray cluster: a head and a second node on this machine, stages placed by custom
resources on different nodes. In a subprocess (tests/runtime/cluster_check.py), apart from the
session's local Ray, and it stops exactly the Ray processes it started."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("cluster_check.py")


def test_stages_placed_on_two_ray_nodes_by_resources():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["placement"]["backbone"] == out["stage_a_node"][0]
    assert out["placement"]["bev"] == out["stage_b_node"][0]
    assert out["placement"]["backbone"] != out["placement"]["bev"]
    assert out["frame_ids"] == [0, 1, 2, 3, 4] and set(out["kinds"]) == {"tick"}
