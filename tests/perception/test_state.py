"""TemporalState: reset forgets, serialise/restore continues bit-identically, queue masks per stream."""
from __future__ import annotations

import pytest
import torch

from perception.model import BEVStreamModel
from perception.state import FeatureQueue, TemporalState
from tests.perception.model_fixtures import synthetic_tick, tiny_config
from tests.perception.model_fixtures import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _model() -> BEVStreamModel:
    torch.manual_seed(0)
    return BEVStreamModel(tiny_config()).eval()


def _outputs_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in [(a.bev, b.bev), (a.road_logits, b.road_logits), (a.seg_logits, b.seg_logits)]) and all(
        torch.equal(a.detection[k], b.detection[k]) for k in a.detection
    )


@torch.no_grad()
def test_serialise_restore_gives_bit_identical_next_outputs():
    model, cfg = _model(), tiny_config()
    state = None
    for k in range(4):
        _, state = model(synthetic_tick(cfg, k), state)
    blob = state.to_bytes()
    restored = TemporalState.from_bytes(blob)
    nxt = synthetic_tick(cfg, 4)
    a, sa = model(nxt, state)
    b, sb = model(nxt, restored)
    assert _outputs_equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(sa.state_dict().values(), sb.state_dict().values()))


@torch.no_grad()
def test_reset_equals_a_fresh_state():
    model, cfg = _model(), tiny_config()
    state = None
    for k in range(3):
        _, state = model(synthetic_tick(cfg, k), state)
    tick = synthetic_tick(cfg, 3, reset=False)
    fresh, _ = model(synthetic_tick(cfg, 3, reset=True), None)
    via_flag, _ = model(synthetic_tick(cfg, 3, reset=True), state)
    via_method, _ = model(tick, state.reset())
    carried, _ = model(tick, state)
    assert _outputs_equal(fresh, via_flag) and _outputs_equal(fresh, via_method)
    assert not torch.equal(fresh.bev, carried.bev)


def test_queue_push_and_reset_are_per_stream():
    q = FeatureQueue.empty(2, 3, 1, (2, 2))
    feat = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 1, 2, 2)
    pose = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
    t = torch.tensor([1.0, 1.0], dtype=torch.float64)
    q = q.push(torch.tensor([True, False]), feat, pose, t, torch.zeros(2, dtype=torch.float64), torch.zeros(2, 7))
    assert q.valid.tolist() == [[True, False, False], [False, False, False]]
    q = q.push(torch.tensor([True, True]), feat + 10, pose, t + 1, torch.zeros(2, dtype=torch.float64), torch.zeros(2, 7))
    assert q.valid.tolist() == [[True, True, False], [True, False, False]]
    assert q.feats[0, :2, 0, 0, 0].tolist() == [10.0, 0.0] and q.timestamp_s[0, :2].tolist() == [2.0, 1.0]
    q = q.reset(torch.tensor([False, True]))
    assert q.valid.tolist() == [[True, True, False], [False, False, False]]
    assert q.last_push_s.tolist() == [2.0, float("-inf")]


def test_from_state_dict_names_a_missing_key():
    model, cfg = _model(), tiny_config()
    with torch.no_grad():
        _, state = model(synthetic_tick(cfg, 0), None)
    sd = state.state_dict()
    del sd["hidden"]
    try:
        TemporalState.from_state_dict(sd)
    except ValueError as e:
        assert "hidden" in str(e)
    else:
        raise AssertionError("missing key accepted")
