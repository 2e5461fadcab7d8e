"""Video module: ego-motion warp keeps world points, queue push rules, GRU leaves far cells alone."""
from __future__ import annotations

import math

import numpy as np

import pytest
import torch

from perception.grid import BEVGrid
from perception.video import VideoConfig, VideoModule, grid_norm, pose_to_2d, warp_raster
from tests.perception.model_fixtures import one_thread, pose  # noqa: F401  (one_thread: fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = BEVGrid(-12.8, 12.8, -12.8, 12.8, 0.8)  # 32 x 32


def warp_entry(feat: torch.Tensor, entry_pose: torch.Tensor, cur_pose: torch.Tensor) -> torch.Tensor:
    entry_from_cur = np.linalg.inv(pose_to_2d(entry_pose[None].numpy())) @ pose_to_2d(cur_pose[None].numpy())
    n = grid_norm(GRID)[None]
    return warp_raster(feat, entry_from_cur, n, n, GRID.shape)


def test_feature_at_a_world_point_stays_there():
    """A one-hot feature moves to the cell that holds the same world point after translation + 90 deg yaw."""
    entry_pose, cur_pose = pose(100.0, 50.0, 0.3), pose(100.0, 50.0, 0.3) @ pose(4.0, -2.4, math.pi / 2)
    feat = torch.zeros(1, 1, *GRID.shape)
    feat[0, 0, 20, 9] = 1.0
    out = warp_entry(feat, entry_pose, cur_pose)
    centres = GRID.cell_centers(dtype=torch.float64)
    world = entry_pose[:2, :2] @ centres[20, 9] + entry_pose[:2, 3]
    in_cur = torch.linalg.inv(cur_pose)[:2, :2] @ world + torch.linalg.inv(cur_pose)[:2, 3]
    i, j = GRID.to_cell(in_cur).floor().long().tolist()
    assert out[0, 0, i, j].item() > 0.999
    assert out.sum().item() < 1.001


def test_linear_world_field_is_warped_exactly():
    """Feature = world x and world y (linear, so bilinear sampling is exact) under a generic motion."""
    entry_pose = pose(10.0, -3.0, 0.2)
    cur_pose = entry_pose @ pose(2.3, 0.7, 0.17)
    c = GRID.cell_centers(dtype=torch.float64)  # (H, W, 2) ego of the entry
    world_e = c @ entry_pose[:2, :2].T + entry_pose[:2, 3]
    feat = world_e.permute(2, 0, 1)[None].float()
    out = warp_entry(feat, entry_pose, cur_pose)[0]
    world_c = (c @ cur_pose[:2, :2].T + cur_pose[:2, 3]).permute(2, 0, 1).float()
    # Cells whose world point the entry also saw (away from the entry's window edge).
    back = (c @ cur_pose[:2, :2].T + cur_pose[:2, 3] - entry_pose[:2, 3]) @ entry_pose[:2, :2]
    inside = (back.abs() < 12.8 - 0.8).all(-1)
    torch.testing.assert_close(out[:, inside], world_c[:, inside], atol=1e-3, rtol=0)


def _module(**kw) -> VideoModule:
    torch.manual_seed(0)
    cfg = VideoConfig(hidden_channels=4, key_channels=4, world_cells=48, recenter_cells=6, **kw)
    return VideoModule(4, GRID, cfg)


def _run(mod: VideoModule, ticks: list[tuple[float, torch.Tensor]], state=None):
    x = torch.rand(1, 4, *GRID.shape, generator=torch.Generator().manual_seed(1))
    pushes_t, pushes_s = [], []
    for t, p in ticks:
        before_t = None if state is None else state.time_queue.last_push_s.clone()
        before_s = None if state is None else state.space_queue.last_push_s.clone()
        _, state = mod(x, p[None], torch.tensor([t], dtype=torch.float64), torch.zeros(1, 7), torch.tensor([False]), state)
        pushes_t.append(before_t is None or bool(state.time_queue.last_push_s != before_t))
        pushes_s.append(before_s is None or bool(state.space_queue.last_push_s != before_s))
    return state, pushes_t, pushes_s


@torch.no_grad()
def test_time_queue_pushes_by_elapsed_time():
    mod = _module(push_period_ms=27.0)
    ticks = [(0.010 * k, pose(0.0, 0.0, 0.0)) for k in range(10)]  # 10 ms ticks: push every 3rd (30 ms)
    state, pt, _ = _run(mod, ticks)
    assert pt == [True, False, False, True, False, False, True, False, False, True]
    assert int(state.time_queue.valid.sum()) == 4
    torch.testing.assert_close(state.time_queue.timestamp_s[0], torch.tensor([0.09, 0.06, 0.03, 0.0], dtype=torch.float64))


@torch.no_grad()
def test_space_queue_pushes_by_distance_not_when_standing_still():
    mod = _module(push_distance_m=1.0)
    moving = [(0.1 * k, pose(0.4 * k * math.cos(0.5), 0.4 * k * math.sin(0.5), 0.5)) for k in range(8)]
    state, pt, ps = _run(mod, moving)
    assert ps == [True, False, False, True, False, False, True, False]  # 0, 1.2, 2.4 m travelled
    assert all(pt)  # 100 ms ticks: the time queue pushes every tick
    still = [(0.1 * k, pose(5.0, 5.0, 0.0)) for k in range(8)]
    state, pt, ps = _run(mod, still)
    assert ps == [True] + [False] * 7
    assert int(state.space_queue.valid.sum()) == 1 and all(pt)


@torch.no_grad()
def test_gru_leaves_far_cells_untouched():
    mod = _module(update_radius_m=6.0)
    p = pose(3.0, 1.0, 0.4)
    x = torch.rand(1, 4, *GRID.shape)
    _, state = mod(x, p[None], torch.tensor([0.0], dtype=torch.float64), torch.zeros(1, 7), torch.tensor([False]), None)
    state.hidden = torch.rand_like(state.hidden)
    before = state.hidden.clone()
    _, new = mod(torch.rand(1, 4, *GRID.shape), p[None], torch.tensor([0.1], dtype=torch.float64), torch.zeros(1, 7), torch.tensor([False]), state)
    # Slow reference: the world-frame distance of each hidden cell from the ego.
    n, res = mod.config.world_cells, GRID.resolution
    a = new.anchor_xy[0]
    gi = a[0] + (torch.arange(n, dtype=torch.float64) + 0.5) * res
    gj = a[1] + (torch.arange(n, dtype=torch.float64) + 0.5) * res
    dist = ((gi[:, None] - 3.0) ** 2 + (gj[None, :] - 1.0) ** 2).sqrt()
    far, near = dist > 6.0 + 1e-6, dist < 5.0
    assert torch.equal(new.hidden[0][:, far], before[0][:, far])
    assert (new.hidden[0][:, near] != before[0][:, near]).float().mean() > 0.9


@torch.no_grad()
def test_hidden_raster_recentres_by_whole_cells_keeping_world_content():
    mod = _module()
    p0 = pose(0.0, 0.0, 0.0)
    _, state = mod(torch.rand(1, 4, *GRID.shape), p0[None], torch.tensor([0.0], dtype=torch.float64), torch.zeros(1, 7), torch.tensor([False]), None)
    n, res = mod.config.world_cells, GRID.resolution
    a0 = state.anchor_xy[0].clone()
    anchor0 = state.anchor_xy.numpy().copy()
    # Paint the hidden raster with a function of the world cell index.
    gi = torch.round(a0[0] / res) + torch.arange(n)
    gj = torch.round(a0[1] / res) + torch.arange(n)
    paint = (gi[:, None] * 1000 + gj[None, :]).float() + 1e6  # never 0 (0 = fresh cell)
    hidden = paint[None, None].expand(1, 4, n, n).clone()
    moved, anchor = mod.recenter(hidden, anchor0, np.array([[8.0, -5.6]]))
    anchor = torch.from_numpy(anchor)
    shift = torch.round((anchor[0] - a0) / res).long()
    assert shift.abs().max() > 0 and torch.allclose(anchor[0] / res, torch.round(anchor[0] / res))
    si, sj = shift.tolist()
    gi2 = torch.round(anchor[0, 0] / res) + torch.arange(n)
    gj2 = torch.round(anchor[0, 1] / res) + torch.arange(n)
    expect = (gi2[:, None] * 1000 + gj2[None, :]).float() + 1e6
    overlap = (moved[0, 0] != 0)
    assert overlap.sum() == (n - abs(si)) * (n - abs(sj))
    assert torch.equal(moved[0, 0][overlap], expect[overlap])


@torch.no_grad()
def test_fusion_reads_warped_entries():
    """With entries in the queue the output differs from the same frame with no history."""
    mod = _module()
    x = torch.rand(1, 4, *GRID.shape)
    t = torch.tensor([0.0], dtype=torch.float64)
    out0, s = mod(x, pose(0, 0, 0)[None], t, torch.zeros(1, 7), torch.tensor([False]), None)
    out1, _ = mod(torch.rand(1, 4, *GRID.shape), pose(1, 0, 0)[None], t + 0.1, torch.zeros(1, 7), torch.tensor([False]), s)
    out1_fresh, _ = mod(torch.rand(1, 4, *GRID.shape), pose(1, 0, 0)[None], t + 0.1, torch.zeros(1, 7), torch.tensor([True]), s)
    assert not torch.allclose(out1, out1_fresh)


def _streams(mod: VideoModule, fast: bool, ticks) -> list:
    """Run `ticks` [(t, pose, reset)] with the fast path on or off; outputs and states per tick."""
    mod.fast = fast
    g = torch.Generator().manual_seed(3)
    state, out = None, []
    with torch.no_grad():
        for t, p, reset in ticks:
            x = torch.randn(1, 4, *GRID.shape, generator=g)
            kin = torch.randn(1, 7, generator=g)
            y, state = mod(x, p[None], torch.tensor([t], dtype=torch.float64), kin, torch.tensor([reset]), state)
            out.append((y, state))
    mod.fast = True
    return out


def test_inference_fast_path_equals_the_reference():
    """Driving with turns (entries shared by both queues, recentring), standing still, a reset mid-way."""
    mod = _module(push_period_ms=50.0, push_distance_m=1.0)
    ticks, x, y, yaw = [], 0.0, 0.0, 0.3
    for k in range(16):
        if not 6 <= k < 9:  # stands still for three ticks
            x, y, yaw = x + 1.4 * math.cos(yaw), y + 1.4 * math.sin(yaw), yaw + 0.08
        ticks.append((k / 12.0, pose(x, y, yaw), k == 11))
    ref, fast = _streams(mod, False, ticks), _streams(mod, True, ticks)
    shared = 0
    for (yr, sr), (yf, sf) in zip(ref, fast):
        torch.testing.assert_close(yf, yr, atol=1e-5, rtol=1e-5)
        for key, v in sr.state_dict().items():
            torch.testing.assert_close(sf.state_dict()[key], v, atol=1e-5, rtol=1e-5, msg=key)
        shared += int((sr.time_queue.timestamp_s[0, :, None] == sr.space_queue.timestamp_s[0, None, :]).sum())
    assert shared > 0  # the case of an entry held by both queues did occur


def test_fast_path_leaves_the_input_state_untouched():
    mod = _module()
    ticks = [(k / 12.0, pose(0.9 * k, 0.0, 0.05 * k), k == 0) for k in range(4)]
    (_, st), = _streams(mod, True, ticks[:1])
    before = {k: v.clone() for k, v in st.state_dict().items()}
    with torch.no_grad():
        mod(torch.rand(1, 4, *GRID.shape), ticks[1][1][None], torch.tensor([ticks[1][0]], dtype=torch.float64), torch.zeros(1, 7), torch.tensor([False]), st)
    for k, v in st.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_closed_form_inverse_equals_numpy():
    from perception.video import inv_affine_2d, metric_to_norm

    rng = np.random.default_rng(0)
    poses = pose_to_2d(np.stack([pose(*rng.normal(size=2) * 50, rng.uniform(-3, 3)).numpy() for _ in range(5)]))
    norms = metric_to_norm(-10.0, 30.0, -7.0, 9.0)
    for m in (poses, norms, poses @ norms):
        np.testing.assert_allclose(inv_affine_2d(m), np.linalg.inv(m), atol=1e-12, rtol=1e-12)
