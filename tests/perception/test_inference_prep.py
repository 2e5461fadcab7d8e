"""prepare_for_inference (perception/fuse.py) computes what the plain eager model computes, within float rounding.

Tolerance (stated, and what these tests assert): every output of the prepared model is within 1e-4 of the
plain eager path's, relative to the largest magnitude of that output (detection class logits and box
deltas, road logits, seg logits, the fused BEV feature), tick after tick with the temporal state carried,
so the queues, the motion branch and the spatial GRU are covered; the carried GRU raster too. Measured:
~1e-6 relative after eight ticks (oneDNN sums in another order once a ReLU or an addition is fused).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from perception.fuse import prepare_for_inference
from perception.model import BEVStreamModel, ModelInputs
from tests.perception.model_fixtures import canonical_rig, pose, synthetic_tick, tiny_config

WEIGHTS = Path(__file__).resolve().parents[2] / "perception" / "weights" / "bevstream.pt"
REL_TOL = 1e-4


def assert_close_rel(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    scale = float(want.abs().max()) or 1.0
    err = float((got - want).abs().max())
    assert err <= REL_TOL * scale, f"{what}: max abs error {err:.3g} > {REL_TOL} x max |value| {scale:.3g}"


def assert_outputs_close(got, want, tick: int) -> None:
    for key in ("cls_logits", "box_deltas"):
        assert_close_rel(got.detection[key], want.detection[key], f"tick {tick} detection {key}")
    assert_close_rel(got.road_logits, want.road_logits, f"tick {tick} road logits")
    assert_close_rel(got.seg_logits, want.seg_logits, f"tick {tick} seg logits")
    assert_close_rel(got.bev, want.bev, f"tick {tick} BEV feature")


def shipped_tick(cfg, k: int, g: torch.Generator) -> ModelInputs:
    """Tick k of a drive at 10 m/s, 12 Hz, turning slowly; fresh random images every tick."""
    intr, ext = canonical_rig(cfg)
    return ModelInputs(
        images=torch.rand(1, 6, 3, *cfg.image_size, generator=g), intrinsics=intr[None], cam_to_ego=ext[None],
        camera_mask=torch.ones(1, 6, dtype=torch.bool), ego_to_global=pose(10.0 / 12.0 * k, 0.05 * k, 0.01 * k)[None],
        timestamp_s=torch.tensor([k / 12.0], dtype=torch.float64), kinematics=torch.tensor([[10.0, 0, 0, 0, 0, 0, 0.12]]),
        reset=torch.tensor([k == 0]),
    )


def test_prepared_shipped_model_streams_the_eager_outputs():
    """The shipped weights, as the runtime loads them: eight streaming ticks, prepared vs plain eager."""
    from perception.checkpoint import load_trained_model

    assert WEIGHTS.exists(), f"the shipped weights are missing: {WEIGHTS}"
    eager = load_trained_model(WEIGHTS)
    prepared = load_trained_model(WEIGHTS).prepare_for_inference()
    cfg = eager.config
    g = torch.Generator().manual_seed(0)
    se = sp = None
    with torch.inference_mode():
        for k in range(8):
            tick = shipped_tick(cfg, k, g)
            want, se = eager(tick, se)
            got, sp = prepared(tick, sp)
            assert_outputs_close(got, want, k)
            assert_close_rel(sp.hidden, se.hidden, f"tick {k} GRU raster")
    assert bool(se.time_queue.valid.any()) and bool(se.space_queue.valid[0, 1])  # the video path ran with entries


@pytest.mark.parametrize("batch", [1, 2])
def test_prepared_tiny_model_matches_eager_with_a_missing_camera(batch: int):
    """Batches of streams and a missing camera (other input shapes: the packed weights follow them)."""
    torch.manual_seed(0)
    eager = BEVStreamModel(tiny_config()).eval()
    prepared = BEVStreamModel(tiny_config()).eval()
    prepared.load_state_dict(eager.state_dict())
    prepare_for_inference(prepared)
    cfg = eager.config
    se = sp = None
    with torch.no_grad():
        for k in range(4):
            tick = synthetic_tick(cfg, k, batch=batch)
            tick.camera_mask[:, 2] = k != 2
            want, se = eager(tick, se)
            got, sp = prepared(tick, sp)
            assert_outputs_close(got, want, k)


def test_training_path_is_unchanged_by_prepare():
    """With autograd on, a prepared model runs the plain modules: same losses and gradients, same state dict."""
    torch.manual_seed(0)
    plain = BEVStreamModel(tiny_config()).eval()
    prepared = BEVStreamModel(tiny_config()).eval()
    prepared.load_state_dict(plain.state_dict())
    keys = set(prepared.state_dict())
    prepare_for_inference(prepared)
    assert set(prepared.state_dict()) == keys
    for m in (plain, prepared):
        m.train()
    from tests.perception.model_fixtures import synthetic_targets

    cfg = plain.config
    clip = [synthetic_tick(cfg, k) for k in range(2)]
    targets = [synthetic_targets(cfg, t, k) for k, t in enumerate(clip)]
    losses = []
    for m in (plain, prepared):
        torch.manual_seed(1)
        loss = m.forward_clip(clip, targets)["total"]
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    g_plain = plain.backbone.stem[0].weight.grad
    torch.testing.assert_close(prepared.backbone.stem[0].weight.grad, g_plain, rtol=1e-4, atol=1e-6)


def test_prepare_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        prepare_for_inference(BEVStreamModel(tiny_config()))
