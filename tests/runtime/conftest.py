"""One Ray instance for the whole runtime test session (2 CPUs, no dashboard), shut down at the end."""
from __future__ import annotations

import functools

import pytest


@pytest.fixture(scope="session")
def ray_session():
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    from tests.runtime import fakes

    cloudpickle.register_pickle_by_value(fakes)  # workers need not import the tests package
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 object_store_memory=200 * 1024 * 1024, namespace="bevstream-tests")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture
def counting_factory():
    from tests.runtime.fakes import CountingModel

    return functools.partial(CountingModel)


def small_config(**pipeline):
    """Runtime config for tests: the actors take no CPU slot so several runtimes fit in 2 CPUs."""
    from runtime.config import config_from_dict

    stage = {"num_cpus": 0, "torch_threads": 1, "max_restarts": 2}
    if "max_in_flight" in pipeline:  # the tests' cap holds for their replays too
        pipeline.setdefault("replay_max_in_flight", pipeline["max_in_flight"])
    return config_from_dict({
        "stages": {"backbone": stage, "bev": stage, "sink": {"num_cpus": 0, "max_restarts": 0}},
        "pipeline": {"max_in_flight": 2, "checkpoint_every": 3, **pipeline},
        "output": {"progress": False},
    })
