"""Video module (seed Part 2): feature queues, ego-motion alignment, fusion, and a world-fixed spatial GRU.

Per tick, with the current single-frame BEV feature x (B, C, H, W):
1. every queue entry is warped into the current ego frame from the two poses (2D rigid motion:
   `affine_grid` + `grid_sample` on the BEV raster);
2. fusion: each cell attends over its warped entries (keys carry encodings of the entry's time and
   distance offset and which queue it came from; a learned "nothing" key lets it ignore them all),
   plus an encoding of the ego kinematics;
3. spatial GRU: its hidden state is a raster fixed to the world (a rolling window, re-centred by whole
   cells when the ego nears its edge). The hidden state is read into the ego frame, updated by a
   ConvGRU with the fused feature, and written back only into the world cells inside the
   BEV window (optionally within `update_radius_m`): cells far from the car keep their memory untouched;
4. the current x, compressed by a 1x1 conv, is pushed into the time queue (every `push_period_ms`) and the space queue (every
   `push_distance_m` travelled; never while standing still).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from perception.bev_warp import affine_grid, affine_theta, grid_norm, inv_affine_2d, metric_to_norm, pose_to_2d, warp_raster  # noqa: F401
from perception.fuse import conv_act, is_packed
from perception.grid import BEVGrid
from perception.motion import MotionFusion
from perception.state import FeatureQueue, TemporalState


@dataclass(frozen=True)
class VideoConfig:
    enabled: bool = True  # False: single-frame model (BEVFormer-S style ablation)
    time_queue_length: int = 4
    space_queue_length: int = 4
    push_period_ms: float = 27.0
    push_distance_m: float = 1.0
    queue_channels: int = 16  # queue entries hold the BEV feature compressed to this many channels (1x1 conv)
    key_channels: int = 16  # fusion attention key size
    hidden_channels: int = 32  # spatial GRU hidden raster channels
    world_cells: int = 128  # side of the world-fixed hidden raster (cells of the BEV grid's resolution)
    recenter_cells: int = 16  # re-centre the raster when the ego is this many cells off its centre
    update_radius_m: float | None = None  # None: update every cell inside the BEV window
    motion_channels: int = 32  # width of the motion-fusion convs over the aligned time queue (perception/motion.py); 0 = off
    motion_wide_dilation: int = 2  # dilation of the motion fusion's wide path (reach +-2d cells); 0 = no wide path

    def __post_init__(self) -> None:
        if self.motion_wide_dilation < 0:
            raise ValueError(f"VideoConfig.motion_wide_dilation must be >= 0, got {self.motion_wide_dilation}")
        for name in ("time_queue_length", "space_queue_length", "queue_channels", "key_channels", "hidden_channels", "world_cells"):
            if getattr(self, name) < 1:
                raise ValueError(f"VideoConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.push_period_ms < 0 or self.push_distance_m <= 0:
            raise ValueError(f"VideoConfig: push_period_ms >= 0 and push_distance_m > 0, got {self.push_period_ms}, {self.push_distance_m}")


def sinusoid(x: torch.Tensor, n: int, scale: float) -> torch.Tensor:
    """(...,) -> (..., 2n) sin/cos of x/scale at n geometric frequencies."""
    freqs = torch.exp(-math.log(100.0) * torch.arange(n, dtype=torch.float32, device=x.device) / max(n, 1))
    a = (x.float() / scale)[..., None] * freqs * math.pi
    return torch.cat([a.sin(), a.cos()], dim=-1)


# ---------------------------------------------------------------- modules


class SpatialGRUCell(nn.Module):
    """ConvGRU: 1x1 convs on the input, 3x3 convs on the hidden state (its spatial memory mixes locally).

    z = sigmoid(Wz x + Uz * h), r = sigmoid(Wr x + Ur * h), h' = (1 - z) h + z tanh(Wc x + Uc * (r h)).
    """

    def __init__(self, in_channels: int, hidden_channels: int) -> None:
        super().__init__()
        self.wx = nn.Conv2d(in_channels, 3 * hidden_channels, 1)
        self.u_gates = nn.Conv2d(hidden_channels, 2 * hidden_channels, 3, padding=1, bias=False)
        self.u_cand = nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if is_packed(self.u_gates):  # inference, prepared (perception.fuse): the gates' add and activation fused into the convs
            g = conv_act(self.wx, x)
            ch = h.shape[1]
            z, r = conv_act(self.u_gates, h, "sigmoid", other=g[:, : 2 * ch]).chunk(2, dim=1)
            cand = conv_act(self.u_cand, r * h, "tanh", other=g[:, 2 * ch :])
            return (1 - z) * h + z * cand
        xz, xr, xc = self.wx(x).chunk(3, dim=1)
        hz, hr = self.u_gates(h).chunk(2, dim=1)
        z, r = torch.sigmoid(xz + hz), torch.sigmoid(xr + hr)
        cand = torch.tanh(xc + self.u_cand(r * h))
        return (1 - z) * h + z * cand


class VideoModule(nn.Module):
    """(x (B, C, H, W), poses, times, kinematics, reset, state) -> (fused BEV (B, C, H, W), new state)."""

    def __init__(self, channels: int, grid: BEVGrid, config: VideoConfig = VideoConfig()) -> None:
        super().__init__()
        self.channels, self.grid, self.config = channels, grid, config
        kc, nf, cq = config.key_channels, 8, config.queue_channels
        self.compress = nn.Conv2d(channels, cq, 1)  # what a queue entry stores
        self.q = nn.Conv2d(channels, kc, 1)
        self.k = nn.Conv2d(cq, kc, 1)
        self.offset_mlp = nn.Sequential(nn.Linear(4 * nf + 2, 32), nn.ReLU(inplace=True), nn.Linear(32, kc))
        self.null_key = nn.Parameter(torch.zeros(kc))
        self.out = nn.Conv2d(cq, channels, 1)
        self.kin_mlp = nn.Sequential(nn.Linear(7, 32), nn.ReLU(inplace=True), nn.Linear(32, channels))
        self.gru = SpatialGRUCell(channels, config.hidden_channels)
        self.read = nn.Conv2d(config.hidden_channels, channels, 1)
        self.motion = MotionFusion(cq, config.time_queue_length, channels, config.motion_channels, config.motion_wide_dilation) if config.motion_channels > 0 else None
        self._nf = nf
        self.fast = True  # False: always the reference path (benchmarks, tests)
        self.reuse_grids = False  # the fast path builds its sampling grids from cached base grids (perception.fuse)

    # ------------------------------------------------------------ state helpers
    def initial_state(self, batch: int, device=None) -> TemporalState:
        c, hw, cfg = self.config.queue_channels, self.grid.shape, self.config
        n = cfg.world_cells
        return TemporalState(
            time_queue=FeatureQueue.empty(batch, cfg.time_queue_length, c, hw, device),
            space_queue=FeatureQueue.empty(batch, cfg.space_queue_length, c, hw, device),
            hidden=torch.zeros(batch, cfg.hidden_channels, n, n, device=device),
            anchor_xy=torch.zeros(batch, 2, dtype=torch.float64, device=device),
            odometer_m=torch.zeros(batch, dtype=torch.float64, device=device),
            last_ego_to_global=torch.eye(4, dtype=torch.float64, device=device).expand(batch, 4, 4).clone(),
            started=torch.zeros(batch, dtype=torch.bool, device=device),
        )

    def world_norm(self, anchor_xy: np.ndarray) -> np.ndarray:
        """(B, 2) raster corners -> (B, 3, 3) global metric -> hidden raster grid coords."""
        size = self.config.world_cells * self.grid.resolution
        return metric_to_norm(anchor_xy[:, 0], anchor_xy[:, 0] + size, anchor_xy[:, 1], anchor_xy[:, 1] + size)

    def snapped_anchor(self, xy: np.ndarray) -> np.ndarray:
        """(B, 2) ego global xy -> raster corner on the world lattice, ego in the centre cell."""
        res, n = self.grid.resolution, self.config.world_cells
        return (np.floor(xy / res) - n // 2) * res

    def recenter(self, hidden: torch.Tensor, anchor: np.ndarray, ego_xy: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Shift the raster by whole cells when the ego drifted more than recenter_cells from its centre."""
        res, n = self.grid.resolution, self.config.world_cells
        shift = np.round((self.snapped_anchor(ego_xy) - anchor) / res).astype(np.int64)  # (B, 2) cells
        far = (np.abs(shift) > self.config.recenter_cells).any(axis=1)
        if not far.any():
            return hidden, anchor
        hidden, anchor = hidden.clone(), anchor.copy()
        for b in np.nonzero(far)[0].tolist():
            si, sj = int(shift[b, 0]), int(shift[b, 1])
            new = torch.zeros_like(hidden[b])
            i0, i1 = max(0, -si), min(n, n - si)
            j0, j1 = max(0, -sj), min(n, n - sj)
            if i0 < i1 and j0 < j1:
                new[:, i0:i1, j0:j1] = hidden[b, :, i0 + si : i1 + si, j0 + sj : j1 + sj]
            hidden[b] = new
            anchor[b] = anchor[b] + shift[b] * res
        return hidden, anchor

    def update_mask(self, anchor: np.ndarray, ego2d: np.ndarray) -> np.ndarray:
        """(B, 1, Hw, Ww) bool: world cells whose centre lies inside the BEV window (and update radius)."""
        res, n, g = self.grid.resolution, self.config.world_cells, self.grid
        idx = (np.arange(n, dtype=np.float64) + 0.5) * res
        gx = anchor[:, 0, None, None] + idx[None, :, None]  # (B, n, 1)
        gy = anchor[:, 1, None, None] + idx[None, None, :]  # (B, 1, n)
        inv = inv_affine_2d(ego2d)  # global -> ego
        ex = inv[:, 0, 0, None, None] * gx + inv[:, 0, 1, None, None] * gy + inv[:, 0, 2, None, None]
        ey = inv[:, 1, 0, None, None] * gx + inv[:, 1, 1, None, None] * gy + inv[:, 1, 2, None, None]
        half = 0.5 * res
        m = (ex >= g.x_min + half) & (ex <= g.x_max - half) & (ey >= g.y_min + half) & (ey <= g.y_max - half)
        if self.config.update_radius_m is not None:
            m = m & (ex * ex + ey * ey <= self.config.update_radius_m**2)
        return m[:, None]

    # ------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, ego_to_global: torch.Tensor, timestamp_s: torch.Tensor, kinematics: torch.Tensor, reset: torch.Tensor, state: TemporalState | None) -> tuple[torch.Tensor, TemporalState]:
        """One tick. Without autograd and for one stream (the streaming case) `_forward_fast` computes the
        same as `forward_batched` (up to float rounding) with less work."""
        if self.fast and not torch.is_grad_enabled() and x.shape[0] == 1:
            return self._forward_fast(x, ego_to_global, timestamp_s, kinematics, reset, state)
        return self.forward_batched(x, ego_to_global, timestamp_s, kinematics, reset, state)

    def _forward_fast(self, x: torch.Tensor, ego_to_global: torch.Tensor, timestamp_s: torch.Tensor, kinematics: torch.Tensor, reset: torch.Tensor, state: TemporalState | None) -> tuple[torch.Tensor, TemporalState]:
        """forward_batched for B = 1 at inference, minus redundant work:
        - entries that are invalid are not warped (their attention weight is exactly 0);
        - an entry held by both queues (pushed the same tick: same time, pose, odometer and feature) is
          warped once and its attention weights summed;
        - the key conv of every warped entry is folded into the query: q . (Wk e + bk + o) =
          (Wk^T q) . e + q . (bk + o), so no (L, Kc, H, W) key tensor is built;
        - the GRU write-back is resampled only over the bounding box of the cells it updates."""
        b, _, h, w = x.shape
        cfg, dev = self.config, x.device
        state, pose, t, fresh, odometer, ego2d = self._begin_tick(ego_to_global, timestamp_s, reset, state, b, dev)
        n = grid_norm(self.grid)[None]

        # 1. Unique valid entries of both queues (B = 1), warped into the current ego frame in one call.
        queues = (state.time_queue, state.space_queue)
        kinds, slots, uniq, entry_of = [], [], [], []  # per valid entry: queue kind, (queue, slot), index into uniq
        meta = [(qi, j, q.ego_to_global[0, j].cpu().numpy(), float(q.timestamp_s[0, j]), float(q.odometer_m[0, j]))
                for qi, q in enumerate(queues) for j in range(q.length) if bool(q.valid[0, j])]
        for qi, j, p, ts, od in meta:
            feat = queues[qi].feats[0, j]
            for u, (uqi, uj, up, uts, uod) in enumerate(uniq):
                if ts == uts and od == uod and np.array_equal(p, up) and torch.equal(feat, queues[uqi].feats[0, uj]):
                    entry_of.append(u)
                    break
            else:
                entry_of.append(len(uniq))
                uniq.append((qi, j, p, ts, od))
            kinds.append(float(qi))
            slots.append((ts, od))
        kin = kinematics.float().to(dev)
        xk = x + self.kin_mlp(kin)[:, :, None, None]
        q = conv_act(self.q, xk)  # (1, Kc, H, W)
        kc = q.shape[1]
        if uniq:
            # (U, Cq, H, W), contiguous: grid_sample reads a channels-last raster several times slower
            feats = torch.stack([queues[qi].feats[0, j] for qi, j, *_ in uniq]).contiguous()
            entry_from_cur = inv_affine_2d(pose_to_2d(np.stack([u[2] for u in uniq]))) @ ego2d  # (U, 3, 3)
            warped, inside = warp_raster(feats, entry_from_cur, n, n, (h, w), return_inside=True, reuse_base=self.reuse_grids)  # (U, Cq, H, W), (U, H, W)
            # 2. Fusion: the same attention as the reference, keys folded into the query.
            dt = torch.tensor([t[0] - ts for ts, _ in slots], dtype=torch.float64)  # (Lv,) s
            dd = torch.tensor([odometer[0] - od for _, od in slots], dtype=torch.float64)  # (Lv,) m
            lv = len(slots)
            off = torch.cat([sinusoid(dt, self._nf, 1.0), sinusoid(dd, self._nf, 10.0), torch.tensor(kinds)[:, None], torch.ones(lv, 1)], -1).to(dev)
            kbias = self.offset_mlp(off) + self.k.bias  # (Lv, Kc)
            wk = self.k.weight.flatten(1)  # (Kc, Cq)
            qk = torch.mm(wk.t(), q[0].flatten(1))  # (Cq, HW) = Wk^T q
            s_entry = (warped.flatten(2) * qk).sum(1)  # (U, HW)
            idx = torch.tensor(entry_of, dtype=torch.long, device=dev)
            scores = torch.addmm(s_entry.index_select(0, idx), kbias, q[0].flatten(1)).div_(math.sqrt(kc))  # (Lv, HW)
            scores.masked_fill_(~inside.flatten(1).index_select(0, idx), float("-inf"))
            null = (q * self.null_key[None, :, None, None]).sum(1, keepdim=True) / math.sqrt(kc)  # (1, 1, H, W)
            attn = torch.softmax(torch.cat([null[0].flatten(1), scores], 0), dim=0)[1:]  # (Lv, HW)
            attn_u = torch.zeros(len(uniq), h * w, dtype=attn.dtype, device=dev).index_add_(0, idx, attn)  # (U, HW)
            wf = warped.flatten(2)
            ctx = wf[0] * attn_u[0]
            for u in range(1, len(uniq)):
                ctx.addcmul_(wf[u], attn_u[u])
            ctx = ctx.view(1, -1, h, w)  # (1, Cq, H, W)
        else:
            ctx = torch.zeros(1, cfg.queue_channels, h, w, dtype=x.dtype, device=dev)
        fused = conv_act(self.out, ctx, other=xk)  # xk + out(ctx)
        entry = conv_act(self.compress, x)  # (1, Cq, H, W): this tick's queue entry
        if self.motion is not None:
            fused = fused + self._motion_fast(entry, meta, entry_of, warped if uniq else None, inside if uniq else None, t[0])

        # 3. Spatial GRU on the world-fixed hidden raster; write back only the bounding box of updated cells.
        hidden, anchor = state.hidden, state.anchor_xy.cpu().numpy()
        anchor = np.where(fresh[:, None], self.snapped_anchor(pose[:, :2, 3]), anchor)
        hidden, anchor = self.recenter(hidden, anchor, pose[:, :2, 3])
        wn = self.world_norm(anchor)
        h_ego = warp_raster(hidden, ego2d, wn, n, (h, w), reuse_base=self.reuse_grids)  # world -> ego window
        h_new = self.gru(fused, h_ego)  # (1, Ch, H, W)
        hidden = self.write_back(hidden, h_new, anchor, ego2d, wn, n)
        out = conv_act(self.read, h_new, other=fused)  # fused + read(h_new)

        # 4. Push (as the reference).
        return out, self._pushed_state(state, entry, pose, t, odometer, kinematics, hidden, anchor)

    def _begin_tick(self, ego_to_global: torch.Tensor, timestamp_s: torch.Tensor, reset: torch.Tensor, state: TemporalState | None, b: int, dev):
        """The state with reset streams emptied, and this tick's poses (B, 4, 4), times (B,), fresh-start mask
        (B,), odometer (B,: planar distance travelled, not advanced on a fresh start) and planar poses (B, 3, 3)."""
        pose = ego_to_global.detach().double().cpu().numpy()  # (B, 4, 4)
        t = timestamp_s.detach().double().cpu().numpy()  # (B,)
        if state is None:
            state = self.initial_state(b, dev)
        if state.batch_size != b:
            raise ValueError(f"VideoModule: state holds {state.batch_size} streams, inputs {b}")
        fresh_t = reset.detach().cpu().bool() | ~state.started.cpu()
        fresh = fresh_t.numpy()
        state = state.reset(fresh_t.to(dev))
        step = np.linalg.norm(pose[:, :2, 3] - state.last_ego_to_global.cpu().numpy()[:, :2, 3], axis=1)
        odometer = state.odometer_m.cpu().numpy() + np.where(fresh, 0.0, step)
        return state, pose, t, fresh, odometer, pose_to_2d(pose)

    def _pushed_state(self, state: TemporalState, entry: torch.Tensor, pose: np.ndarray, t: np.ndarray, odometer: np.ndarray,
                      kinematics: torch.Tensor, hidden: torch.Tensor, anchor: np.ndarray) -> TemporalState:
        """The next state: `entry` (B, Cq, H, W) pushed into the time queue every push_period_ms and into the
        space queue every push_distance_m travelled, with this tick's pose, time, odometer and GRU raster."""
        cfg, dev, b = self.config, entry.device, entry.shape[0]
        tq, sq = state.time_queue, state.space_queue
        push_t = torch.from_numpy(t - tq.last_push_s.cpu().numpy() >= cfg.push_period_ms / 1000.0 - 1e-6).to(dev)
        push_s = torch.from_numpy(odometer - sq.last_push_odometer_m.cpu().numpy() >= cfg.push_distance_m - 1e-9).to(dev)
        pose_t, t_t, odo_t = (torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in (pose, t, odometer))
        kin_t = kinematics.detach().float().to(dev)
        return TemporalState(
            time_queue=tq.push(push_t, entry, pose_t, t_t, odo_t, kin_t),
            space_queue=sq.push(push_s, entry, pose_t, t_t, odo_t, kin_t),
            hidden=hidden,
            anchor_xy=torch.from_numpy(np.ascontiguousarray(anchor)).to(dev),
            odometer_m=odo_t,
            last_ego_to_global=pose_t,
            started=torch.ones(b, dtype=torch.bool, device=dev),
        )

    def _motion_fast(self, entry: torch.Tensor, meta: list, entry_of: list[int], warped: torch.Tensor | None, inside: torch.Tensor | None, t: float) -> torch.Tensor:
        """The motion branch for B = 1 from the fast path's unique warped entries: the time queue's valid
        slots (first in `meta`) are gathered into (1, Lt, Cq, H, W); the rest stays zero and unseen."""
        lt, (_, cq, h, w) = self.config.time_queue_length, entry.shape
        past = entry.new_zeros(1, lt, cq, h, w)
        seen = torch.zeros(1, lt, h, w, dtype=torch.bool, device=entry.device)
        dt = torch.zeros(1, lt, dtype=torch.float64)
        for p, (qi, j, _, ts, _) in enumerate(meta):
            if qi != 0:
                continue
            u = entry_of[p]
            past[0, j], seen[0, j], dt[0, j] = warped[u], inside[u], t - ts
        return self.motion(entry, past, seen, dt.to(entry.device))

    def write_back(self, hidden: torch.Tensor, h_new: torch.Tensor, anchor: np.ndarray, ego2d: np.ndarray, wn: np.ndarray, n: np.ndarray) -> torch.Tensor:
        """New world raster: `hidden` (B, Ch, Nw, Nw) with the cells of update_mask replaced by `h_new`
        (B, Ch, H, W) resampled from the ego window. Only the bounding box of those cells is resampled
        (grid_sample is per output cell, so the values equal a resampling of the whole raster)."""
        nw = self.config.world_cells
        mask = self.update_mask(anchor, ego2d)  # (B, 1, Nw, Nw)
        rows, cols = np.nonzero(mask.any(axis=(0, 1, 3)))[0], np.nonzero(mask.any(axis=(0, 1, 2)))[0]
        if rows.size == 0:
            return hidden
        i0, i1, j0, j1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        theta = torch.from_numpy(np.ascontiguousarray(affine_theta(inv_affine_2d(ego2d), n, wn))).to(device=h_new.device, dtype=h_new.dtype)
        g = affine_grid(theta, [h_new.shape[0], h_new.shape[1], nw, nw], box=(i0, i1, j0, j1), reuse_base=self.reuse_grids)
        written = F.grid_sample(h_new, g, mode="bilinear", padding_mode="border", align_corners=False)  # (B, Ch, i1-i0, j1-j0)
        out = hidden.clone()
        box = torch.from_numpy(np.ascontiguousarray(mask[:, :, i0:i1, j0:j1])).to(hidden.device)
        out[:, :, i0:i1, j0:j1] = torch.where(box, written, hidden[:, :, i0:i1, j0:j1])
        return out

    def forward_batched(self, x: torch.Tensor, ego_to_global: torch.Tensor, timestamp_s: torch.Tensor, kinematics: torch.Tensor, reset: torch.Tensor, state: TemporalState | None) -> tuple[torch.Tensor, TemporalState]:
        """The batched path: training, batches of streams, and the reference `_forward_fast` is tested against."""
        b, _, h, w = x.shape
        cfg, dev = self.config, x.device
        c = cfg.queue_channels
        state, pose, t, fresh, odometer, ego2d = self._begin_tick(ego_to_global, timestamp_s, reset, state, b, dev)

        # 1. Warp every queue entry into the current ego frame.
        queues = (state.time_queue, state.space_queue)
        feats = torch.cat([q.feats for q in queues], dim=1)  # (B, L, C, H, W)
        valid = torch.cat([q.valid for q in queues], dim=1).to(dev)  # (B, L)
        entry_pose = np.concatenate([q.ego_to_global.cpu().numpy() for q in queues], axis=1)  # (B, L, 4, 4)
        L = feats.shape[1]
        entry_from_cur = np.linalg.inv(pose_to_2d(entry_pose)) @ ego2d[:, None]  # (B, L, 3, 3)
        n = grid_norm(self.grid)[None]
        warped, inside = warp_raster(feats.reshape(b * L, c, h, w), entry_from_cur.reshape(b * L, 3, 3), n, n, (h, w), return_inside=True)
        warped = warped.view(b, L, c, h, w)
        inside = inside.view(b, L, h, w)  # the entry saw this cell

        # 2. Fusion: attention over the entries, with offset encodings; a null key to ignore them all.
        dt = torch.from_numpy(t[:, None] - np.concatenate([q.timestamp_s.cpu().numpy() for q in queues], 1))  # (B, L) s
        dd = torch.from_numpy(odometer[:, None] - np.concatenate([q.odometer_m.cpu().numpy() for q in queues], 1))  # (B, L) m
        which = torch.cat([torch.zeros(cfg.time_queue_length), torch.ones(cfg.space_queue_length)])[None].expand(b, L)
        off = torch.cat([sinusoid(dt, self._nf, 1.0), sinusoid(dd, self._nf, 10.0), which[..., None], torch.ones(b, L, 1)], -1).to(dev)
        kin = kinematics.float().to(dev)
        xk = x + self.kin_mlp(kin)[:, :, None, None]
        q = self.q(xk)  # (B, Kc, H, W)
        k = self.k(warped.reshape(b * L, c, h, w)).view(b, L, -1, h, w) + self.offset_mlp(off)[..., None, None]
        scores = (q[:, None] * k).sum(2) / math.sqrt(q.shape[1])  # (B, L, H, W)
        scores = scores.masked_fill(~(inside & valid[:, :, None, None]), float("-inf"))
        null = (q * self.null_key[None, :, None, None]).sum(1, keepdim=True) / math.sqrt(q.shape[1])  # (B, 1, H, W)
        attn = torch.softmax(torch.cat([null, scores], 1), dim=1)[:, 1:]  # (B, L, H, W)
        ctx = (attn[:, :, None] * warped).sum(1)  # (B, Cq, H, W)
        fused = xk + self.out(ctx)
        entry = self.compress(x)  # (B, Cq, H, W): this tick's queue entry
        if self.motion is not None:
            lt = cfg.time_queue_length
            seen = inside[:, :lt] & valid[:, :lt, None, None]  # (B, Lt, H, W)
            fused = fused + self.motion(entry, warped[:, :lt], seen, dt[:, :lt].to(dev))

        # 3. Spatial GRU on the world-fixed hidden raster.
        hidden, anchor = state.hidden, state.anchor_xy.cpu().numpy()
        anchor = np.where(fresh[:, None], self.snapped_anchor(pose[:, :2, 3]), anchor)
        hidden, anchor = self.recenter(hidden, anchor, pose[:, :2, 3])
        wn = self.world_norm(anchor)
        h_ego = warp_raster(hidden, ego2d, wn, n, (h, w))  # world -> ego window
        h_new = self.gru(fused, h_ego)  # (B, Ch, H, W)
        nw = cfg.world_cells
        written = warp_raster(h_new, np.linalg.inv(ego2d), n, wn, (nw, nw), padding_mode="border")
        hidden = torch.where(torch.from_numpy(self.update_mask(anchor, ego2d)).to(dev), written, hidden)
        out = fused + self.read(h_new)

        # 4. Push the current single-frame feature (compressed; the graph is kept within a training clip).
        return out, self._pushed_state(state, entry, pose, t, odometer, kinematics, hidden, anchor)
