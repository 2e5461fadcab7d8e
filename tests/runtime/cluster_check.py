"""Run as a script (by test_cluster.py, in its own process): start a Ray head and a second Ray node
on this machine, each with its own custom resource, join them with ray.address, place the backbone on
'stage_a' and the BEV actor on 'stage_b', stream a few frame sets, print the placement as JSON, and
stop exactly the Ray processes it started (their process groups; never `ray stop`, which would kill
every Ray on the machine)."""
from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
# A throw-away local test cluster: no auth token to distribute between its processes.
os.environ["RAY_AUTH_MODE"] = "disabled"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_cli() -> str:
    return str(Path(sys.executable).parent / "ray")


def start_node(args: list[str], log: Path) -> subprocess.Popen:
    """`ray start --block ...` in a new process group: killing the group stops all it started."""
    return subprocess.Popen([ray_cli(), "start", "--block", "--node-ip-address=127.0.0.1", *args], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))


def stop(procs: list[subprocess.Popen]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in reversed(procs):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + (3 if sig == signal.SIGTERM else 10)  # nothing to drain: the driver has left
        while time.time() < deadline and any(p.poll() is None for p in procs):
            time.sleep(0.2)


def main() -> int:
    import ray
    from ray import cloudpickle

    from runtime.api import Runtime
    from runtime.config import config_from_dict
    from runtime.supervisor import ensure_ray
    from tests.runtime import fakes

    cloudpickle.register_pickle_by_value(fakes)
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="bsray"))
    procs = []
    try:
        procs.append(start_node(["--head", f"--port={port}", "--num-cpus=1", '--resources={"stage_a": 1}',
                                 "--include-dashboard=false", f"--temp-dir={tmp}", "--disable-usage-stats"], tmp / "head.log"))
        address = f"127.0.0.1:{port}"
        cfg = config_from_dict({
            "ray": {"address": address},
            "stages": {"backbone": {"num_cpus": 1, "resources": {"stage_a": 1}},
                       "bev": {"num_cpus": 1, "resources": {"stage_b": 1}},
                       "sink": {"num_cpus": 0}},
        })
        deadline = time.time() + 90
        while True:  # the head takes a moment to come up
            try:
                ensure_ray(cfg)
                break
            except Exception:
                if time.time() > deadline or procs[0].poll() is not None:
                    raise
                time.sleep(1.0)
        procs.append(start_node([f"--address={address}", "--num-cpus=1", '--resources={"stage_b": 1}',
                                 "--disable-usage-stats"], tmp / "worker.log"))
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            if time.time() > deadline:
                raise TimeoutError("the second Ray node did not join")
            time.sleep(0.5)
        nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
        sets = [fakes.make_frame_set(i, new_scene=(i == 0)) for i in range(5)]
        with Runtime(cfg, model_factory=functools.partial(fakes.CountingModel)) as rt:
            placement = rt.placement()
            records = list(rt.iterate(fakes.ListSource(sets)))
        print(json.dumps({
            "placement": placement,
            "stage_a_node": [k for k, v in nodes.items() if "stage_a" in v],
            "stage_b_node": [k for k, v in nodes.items() if "stage_b" in v],
            "frame_ids": [r.frame_id for r in records],
            "kinds": [r.kind for r in records],
        }))
        return 0
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
