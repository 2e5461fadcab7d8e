"""The supervisor fits the stage reservations to the CPUs Ray has (`--num-cpus 1` as a compute budget)."""
from __future__ import annotations

import pytest

from runtime.api import Runtime
from runtime.config import RuntimeConfig
from runtime.supervisor import fit_to_cpus
from schema.results import TickResult
from tests.runtime.conftest import small_config
from tests.runtime.fakes import ListSource, make_frame_set


def _with_reservations(cfg: RuntimeConfig, backbone: float, bev: float) -> RuntimeConfig:
    st = cfg.stages
    return cfg.model_copy(update={"stages": st.model_copy(update={
        "backbone": st.backbone.model_copy(update={"num_cpus": backbone}),
        "bev": st.bev.model_copy(update={"num_cpus": bev})})})


def test_reservations_scale_down_in_proportion_only_when_they_do_not_fit():
    cfg = _with_reservations(RuntimeConfig(), 1.0, 3.0)
    fitted = fit_to_cpus(cfg, 2.0)
    assert (fitted.stages.backbone.num_cpus, fitted.stages.bev.num_cpus) == pytest.approx((0.5, 1.5))
    assert fit_to_cpus(cfg, 4.0) is cfg and fit_to_cpus(cfg, 8.0) is cfg
    assert fitted.stages.sink == cfg.stages.sink and fitted.ray == cfg.ray  # nothing else changes


@pytest.mark.timeout(120)  # unfitted, the perception actor (4 CPUs on a 2-CPU Ray) would wait forever to be placed
def test_a_runtime_reserving_more_cpus_than_ray_has_still_runs(ray_session, counting_factory):
    cfg = _with_reservations(small_config(), 2.0, 2.0)
    with Runtime(cfg, model_factory=counting_factory) as rt:
        records = list(rt.iterate(ListSource([make_frame_set(i, new_scene=i == 0) for i in range(3)])))
    assert [r.frame_id for r in records] == [0, 1, 2] and all(isinstance(r, TickResult) for r in records)
