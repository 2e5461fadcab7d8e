"""BEVStreamModel end to end: shapes, stages, determinism, missing cameras, config loader, overfitting."""
from __future__ import annotations

import pytest
import torch

from schema.classes import SEG_CLASSES
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
def test_warm_up_postprocess_runs_the_numba_kernels():
    from perception import nms, road

    BEVStreamModel(tiny_config()).warm_up_postprocess()
    for kernel in (nms._greedy_nms, nms._row_max, road._trace_kernel, road._lengths_and_smooth):
        assert kernel.signatures, kernel  # compiled (or loaded from numba's cache) for the types a tick uses


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


def test_fine_level_features_carry_the_stride8_map_through_the_stages():
    """With a fine level, encode_images folds the backbone's stride-8 map into the camera features, and
    the split stages still equal forward."""
    from perception.backbone import unfold_fine_level

    cfg = tiny_config(fine_level=True)
    model = _model(fine_level=True)
    tick = synthetic_tick(cfg, 0)
    with torch.no_grad():
        feats, _ = model.encode_images(tick.images)
        s16, s8 = unfold_fine_level(feats, cfg.backbone.out_channels)
        maps = model.backbone(tick.images[0])
        assert torch.equal(s16[0], maps["s16"]) and torch.equal(s8[0], maps["s8"])
        out, _ = model(tick, None)
        staged, _ = model.bev_step(feats, tick, None)
    assert torch.equal(out.bev, staged["bev"])


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


def _overfit(model, clip, targets, max_steps: int, done) -> tuple[dict, dict, int]:
    """Adam (lr 1e-2) on one clip until done(first_losses, last_losses) or max_steps -> (first, last, step)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for step in range(max_steps):
        losses = model.forward_clip(clip, targets)
        last = {k: float(v.detach()) for k, v in losses.items()}
        first = first or last
        if done(first, last):
            break
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    return first, last, step


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
        first, last, step = _overfit(model, clip, targets, 150, lambda first, last: last["total"] < first["total"] / 10 and all(
            last[k] < first[k] / 5 for k in ("det_cls", "det_reg", "road")))
    finally:
        torch.set_num_threads(threads)
    assert set(last) >= {"seg", "det_cls", "det_reg", "road", "total"}
    assert last["total"] < first["total"] / 10, (first, last, step)
    assert all(last[k] < first[k] / 5 for k in ("det_cls", "det_reg", "road")) and last["seg"] < first["seg"] / 3, (first, last)


def _simulated_clip(cfg, ticks: int):
    """Render `ticks` consecutive 12 Hz frames of the simulated world (seed 0) into ModelInputs + Targets."""
    import math

    import numpy as np

    from schema.classes import DETECTION_NAMES
    from perception.model import ModelInputs, Targets
    from perception.rectify import Rectifier
    from replay.sim.render import Renderer
    from replay.sim.rig import camera_rig
    from replay.sim.world import World
    from schema.messages import CAMERA_CHANNELS

    world = World(0)
    renderer, rig = Renderer(world, 352, 198), camera_rig(352, 198)
    rect = Rectifier(cfg.rectify)
    half = cfg.grid.x_max
    clip, targets = [], []
    for k in range(ticks):
        st = world.state_at(k / 12.0)
        frames = [renderer.render(st, rig[ch]) for ch in CAMERA_CHANNELS]
        out = rect([torch.from_numpy(rgb).permute(2, 0, 1) for rgb, _ in frames], [rig[c].intrinsic for c in CAMERA_CHANNELS], [rig[c].sensor_to_ego.matrix for c in CAMERA_CHANNELS])
        labels = torch.stack([torch.from_numpy(lab.astype(np.int64))[None, None].float() for _, lab in frames])
        labels = torch.nn.functional.interpolate(labels.flatten(0, 1), size=cfg.image_size, mode="nearest").long().view(1, 6, *cfg.image_size)
        inv, yaw = st.ego_pose.inverse(), st.ego_pose.yaw
        boxes, names = [], []
        for a in st.agents:
            c = inv.transform_points(a.center[None])[0]
            if abs(c[0]) < half - 1 and abs(c[1]) < half - 1:
                v = inv.rotation.rotate(a.velocity)
                boxes.append([*c, *a.size, a.yaw - yaw, v[0], v[1]])
                names.append(DETECTION_NAMES.index(a.detection_name))
        kin = st.ego_kinematics().as_array()
        clip.append(ModelInputs(
            images=out.images[None], intrinsics=out.intrinsics[None], cam_to_ego=out.cam_to_ego[None],
            camera_mask=torch.ones(1, 6, dtype=torch.bool), ego_to_global=torch.from_numpy(st.ego_pose.matrix)[None],
            timestamp_s=torch.tensor([k / 12.0], dtype=torch.float64), kinematics=torch.from_numpy(kin)[None], reset=torch.tensor([k == 0]),
        ))
        bx = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 9)
        bx[:, 6] = torch.atan2(torch.sin(bx[:, 6]), torch.cos(bx[:, 6]))
        road = torch.zeros(1, 2, *cfg.grid.shape)
        road[0, 0, :, cfg.grid.shape[1] // 2] = 1.0  # a lane divider under the ego (the sim drives in a lane)
        targets.append(Targets(gt_boxes=[bx], gt_labels=[torch.tensor(names, dtype=torch.int64)], road_masks=road, seg_labels=labels))
        assert math.isfinite(float(bx.sum()))
    return clip, targets


def test_overfits_simulated_frames():
    """Three frames rendered by the simulator (six cameras, its labels and boxes): the loss falls by 10x."""
    pytest.importorskip("replay.sim.render")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        import dataclasses

        from perception.rectify import RectifyConfig

        # Rectification off: images and label maps are both plain resizes, so they stay aligned.
        cfg = dataclasses.replace(tiny_config(), rectify=RectifyConfig(enabled=False, image_size=(48, 96)))
        clip, targets = _simulated_clip(cfg, 3)
        assert sum(len(t.gt_labels[0]) for t in targets) > 0, "no object near the ego in the simulated frames"
        model = BEVStreamModel(cfg).train()
        first, last, step = _overfit(model, clip, targets, 200, lambda first, last: last["total"] < first["total"] / 10)
    finally:
        torch.set_num_threads(threads)
    assert last["total"] < first["total"] / 10, (first, last, step)


def test_shipped_weights_stream_the_same_through_the_fast_paths():
    """The shipped weights give the reference paths' outputs over a few streaming ticks (default model)."""
    import math
    from pathlib import Path

    from perception.checkpoint import load_weights
    from tests.perception.model_fixtures import canonical_rig, pose

    weights = Path(__file__).resolve().parents[2] / "perception" / "weights" / "bevstream.pt"
    assert weights.exists(), f"the shipped weights are missing: {weights}"
    cfg = ModelConfig()
    model = BEVStreamModel(cfg).eval()
    load_weights(model, weights)
    model.requires_grad_(False)
    intr, ext = canonical_rig(cfg)
    g = torch.Generator().manual_seed(0)
    blocks = torch.rand(1, 6, 3, cfg.image_size[0] // 16, cfg.image_size[1] // 16, generator=g)
    images = blocks.repeat_interleave(16, dim=-2).repeat_interleave(16, dim=-1)

    def tick(k: int):
        from perception.model import ModelInputs

        return ModelInputs(
            images=(images + 0.02 * k).clamp(0, 1), intrinsics=intr[None], cam_to_ego=ext[None], camera_mask=torch.ones(1, 6, dtype=torch.bool),
            ego_to_global=pose(10.0 / 12.0 * k, 0.05 * k, 0.01 * k)[None], timestamp_s=torch.tensor([k / 12.0], dtype=torch.float64),
            kinematics=torch.tensor([[10.0, 0, 0, 0, 0, 0, 0.12]]), reset=torch.tensor([k == 0]),
        )

    def stream(grad: bool) -> list:
        state, outs = None, []
        with torch.set_grad_enabled(grad):  # grad on (no parameter needs it): every reference path
            for k in range(4):
                out, state = model(tick(k), state)
                outs.append(out)
        return outs

    ref, fast = stream(True), stream(False)
    for r, f in zip(ref, fast):
        for key in ("cls_logits", "box_deltas"):
            torch.testing.assert_close(f.detection[key], r.detection[key], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(f.road_logits, r.road_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(f.seg_logits, r.seg_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(f.bev, r.bev, atol=1e-4, rtol=1e-4)
    assert not math.isclose(float(ref[-1].bev.abs().sum()), float(ref[0].bev.abs().sum()))  # the ticks differ


def test_forward_clip_in_two_parts_with_the_carried_state_equals_one_clip():
    """Streaming training's premise: a clip cut in two, the state handed over, computes the same ticks."""
    torch.manual_seed(0)
    cfg = tiny_config()
    model = BEVStreamModel(cfg).eval()
    clip = [synthetic_tick(cfg, k) for k in range(4)]
    targets = [synthetic_targets(cfg, t, k) for k, t in enumerate(clip)]
    with torch.no_grad():
        whole, end = model.forward_clip(clip, targets, return_state=True)
        first, mid = model.forward_clip(clip[:2], targets[:2], return_state=True)
        second = model.forward_clip(clip[2:], targets[2:], mid)
        cold = model.forward_clip(clip[2:], targets[2:])
    for k in ("det_cls", "det_reg", "road", "seg"):
        torch.testing.assert_close((first[k] + second[k]) / 2, whole[k])
    assert end.started.all() and not torch.equal(second["det_cls"], cold["det_cls"]), "the handed-over state is used"
