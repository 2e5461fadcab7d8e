"""BEVStreamModel end to end: shapes, stages, determinism, missing cameras, config loader, overfitting."""
from __future__ import annotations

import pytest
import torch

from perception.classes import SEG_CLASSES
from perception.config import model_config_from_dict, model_config_to_dict
from perception.model import BEVStreamModel, ModelConfig
from perception.structures import Detections
from tests.perception.model_fixtures import synthetic_targets, synthetic_tick, tiny_config
from tests.perception.model_fixtures import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**kw) -> BEVStreamModel:
    torch.manual_seed(0)
    return BEVStreamModel(tiny_config(**kw)).eval()


@torch.no_grad()
def test_output_shapes_and_postprocess():
    model, cfg = _model(), tiny_config()
    out, state = model(synthetic_tick(cfg, 0, batch=2), None)
    h, w = cfg.grid.shape
    a = model.detection_head.num_anchors_per_cell
    assert out.detection["cls_logits"].shape == (2, h * w * a, 10)
    assert out.road_logits.shape == (2, 2, h, w)
    assert out.seg_logits.shape == (2, 6, len(SEG_CLASSES), 12, 24)  # stride 4 of 48 x 96
    assert out.bev.shape == (2, 16, h, w) and state.batch_size == 2
    post = model.postprocess(out)
    assert len(post) == 2 and isinstance(post[0]["detections"], Detections)
    assert post[0]["seg"].dtype == torch.uint8 and post[0]["seg"].shape == (6, 48, 96)
    assert set(post[0]["road"]) == {"lane_divider", "road_edge"}


@torch.no_grad()
def test_stages_equal_forward_and_same_inputs_same_outputs():
    cfg = tiny_config()
    m1, m2 = _model(), _model()
    s1 = s2 = s3 = None
    for k in range(3):
        tick = synthetic_tick(cfg, k)
        o1, s1 = m1(tick, s1)
        o2, s2 = m2(tick, s2)
        feats, seg = m1.encode_images(tick.images)
        o3, s3 = m1.bev_step(feats, tick, s3)
        assert torch.equal(o1.bev, o2.bev) and torch.equal(o1.detection["box_deltas"], o2.detection["box_deltas"])
        assert torch.equal(o1.bev, o3["bev"]) and torch.equal(o1.seg_logits, seg)


@torch.no_grad()
def test_missing_camera_contributes_nothing():
    model, cfg = _model(), tiny_config()
    a = synthetic_tick(cfg, 0)
    a.camera_mask[0, 4] = False
    b = synthetic_tick(cfg, 0)
    b.camera_mask[0, 4] = False
    b.images[0, 4] = torch.rand_like(b.images[0, 4])
    oa, _ = model(a, None)
    ob, _ = model(b, None)
    assert torch.equal(oa.bev, ob.bev) and torch.equal(oa.road_logits, ob.road_logits)


def test_single_frame_mode_passes_state_through():
    model, cfg = _model(video=False), tiny_config(video=False)
    assert model.video is None
    with torch.no_grad():
        out, state = model(synthetic_tick(cfg, 0), None)
    assert state is None and out.bev.shape[1] == 16


def test_bad_inputs_name_the_field():
    model, cfg = _model(), tiny_config()
    tick = synthetic_tick(cfg, 0)
    tick.kinematics = torch.zeros(1, 6)
    with pytest.raises(ValueError, match="kinematics"):
        model(tick, None)


def test_config_loader_round_trip_and_unknown_keys():
    cfg = model_config_from_dict({"bev": {"channels": 32, "attention": "dense", "pillar_heights": [0.0, 2.0]}, "video": {"enabled": False}, "rectify": {"image_size": [176, 320]}})
    assert cfg.bev.channels == 32 and cfg.bev.attention == "dense" and cfg.bev.pillar_heights == (0.0, 2.0)
    assert cfg.video.enabled is False and cfg.image_size == (176, 320)
    assert model_config_from_dict(model_config_to_dict(cfg)) == cfg
    assert model_config_from_dict(None) == ModelConfig()
    with pytest.raises(ValueError, match=r"model\.bev\.chanels: unknown key"):
        model_config_from_dict({"bev": {"chanels": 3}})
    with pytest.raises(ValueError, match=r"model\.vidoe: unknown key"):
        model_config_from_dict({"vidoe": {}})
    with pytest.raises(ValueError, match=r"model\.video\.push_distance_m"):
        model_config_from_dict({"video": {"push_distance_m": "far"}})
    with pytest.raises(ValueError, match="attention"):
        model_config_from_dict({"bev": {"attention": "global"}})


def test_overfits_a_few_frames():
    """Heads, losses and the temporal path are wired right: the clip loss falls by 10x, every head's falls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is far faster than two on a shared, loaded 2-core machine
    try:
        torch.manual_seed(0)
        cfg = tiny_config()
        model = BEVStreamModel(cfg).train()
        clip = [synthetic_tick(cfg, k) for k in range(3)]
        targets = [synthetic_targets(cfg, t, k) for k, t in enumerate(clip)]
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        first = None
        for step in range(150):
            losses = model.forward_clip(clip, targets)
            last = {k: float(v.detach()) for k, v in losses.items()}
            first = first or last
            if last["total"] < first["total"] / 10 and all(last[k] < first[k] / 5 for k in ("det_cls", "det_reg", "road")):
                break
            opt.zero_grad()
            losses["total"].backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert set(last) >= {"seg", "det_cls", "det_reg", "road", "total"}
    assert last["total"] < first["total"] / 10, (first, last, step)
    assert all(last[k] < first[k] / 5 for k in ("det_cls", "det_reg", "road")) and last["seg"] < first["seg"] / 3, (first, last)
