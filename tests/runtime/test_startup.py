"""A normal run prints no traceback-looking Ray lines: in particular no core_worker error that an actor
"has constructor arguments in the object store and max_restarts > 0" (ray issue 53727). The stage
actors are constructed from small values only (the model factory and the state store's NAME), so Ray
can construct them again after a restart."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import functools
from runtime.api import Runtime
from runtime.config import config_from_dict
from tests.runtime.fakes import CountingModel, ListSource, make_frame_set

stage = {"num_cpus": 0, "torch_threads": 1, "max_restarts": 2}
cfg = config_from_dict({"stages": {"backbone": stage, "bev": stage}, "output": {"progress": False}})
with Runtime(cfg, model_factory=functools.partial(CountingModel)) as rt:
    records = list(rt.iterate(ListSource([make_frame_set(i) for i in range(3)])))
print("records", len(records))
"""


def test_a_normal_run_starts_without_ray_errors_or_tracebacks():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "records 3" in out.stdout
    noise = [line for line in out.stderr.splitlines()
             if "object store and max_restarts" in line or "Traceback" in line or " E " in line[:40]]
    assert not noise, "\n".join(noise)
