"""A simulated spinning lidar (nuScenes-like LIDAR_TOP): its point cloud and the points each agent returns.

32 beams from -30.67 to +10.67 degrees elevation, 1084 azimuth steps per revolution, 70 m range,
cast from the real LIDAR_TOP pose. Each ray keeps its nearest hit among the ground, the roadside
structures and every agent's annotation box, so an agent hidden behind another (or beyond range)
gets 0 points; the counts play the role of nuScenes' `num_lidar_pts`, and the hits are the sweep's
points (the exporter writes them as nuScenes `.pcd.bin` files, for depth targets). The whole sweep is
cast at one instant (no rolling-shutter skew), and intensity is not simulated. The kernel is numba,
single threaded, so sweeps are deterministic.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from replay.sim.rig import SensorCalibration
from replay.sim.slab import BOX_CORNER_SIGNS, slab_hit
from replay.sim.world import World, WorldState

N_BEAMS = 32
ELEVATION_DEG = (-30.67, 10.67)
N_AZIMUTH = 1084
RANGE_M = 70.0
MIN_RANGE_M = 1.0  # returns nearer than this (the car itself) are dropped


def beam_directions() -> np.ndarray:
    """(N_BEAMS, N_AZIMUTH, 3) unit ray directions in the lidar frame (azimuth from +x towards +y)."""
    el = np.deg2rad(np.linspace(*ELEVATION_DEG, N_BEAMS))
    az = np.arange(N_AZIMUTH) * (2 * np.pi / N_AZIMUTH)
    ce = np.cos(el)[:, None]
    return np.stack([ce * np.cos(az)[None, :], ce * np.sin(az)[None, :], np.broadcast_to(np.sin(el)[:, None], (N_BEAMS, N_AZIMUTH))], axis=-1)


_DIRS = beam_directions()


@dataclass(frozen=True)
class LidarSweep:
    points: np.ndarray  # (N, 5) float32 in the lidar frame: x, y, z (m), intensity (0: not simulated), ring (beam index)
    counts: dict[str, int]  # lidar returns per agent instance_id (every agent of the state, zeros included)


def lidar_point_counts(world: World, state: WorldState, lidar: SensorCalibration) -> dict[str, int]:
    """Lidar returns per agent instance_id (every agent of the state, zeros included)."""
    return lidar_sweep(world, state, lidar).counts


def lidar_sweep(world: World, state: WorldState, lidar: SensorCalibration) -> LidarSweep:
    """Cast every beam once: the returns (nearest hit within MIN_RANGE_M..RANGE_M) and their count per agent."""
    s2g = state.ego_pose.matrix @ lidar.sensor_to_ego.matrix
    g2s = np.linalg.inv(s2g)
    origin = s2g[:3, 3]
    r_sg, t_sg = g2s[:3, :3], g2s[:3, 3]
    # boxes: agents first (their index is their id), then structures as occluders
    centers, yaws, halves = [], [], []
    for a in state.agents:
        w, l, h = a.size
        centers.append(a.center), yaws.append(a.yaw), halves.append((l / 2, w / 2, h / 2))
    sb = world.structures.boxes
    n_agents = len(centers)
    centers = np.concatenate([np.array(centers).reshape(-1, 3), sb[:, :3]])
    yaws = np.concatenate([np.array(yaws, np.float64), sb[:, 6]])
    halves = np.concatenate([np.array(halves, np.float64).reshape(-1, 3), np.stack([sb[:, 4], sb[:, 3], sb[:, 5]], 1) / 2])
    reach = ((centers[:, :2] - origin[:2]) ** 2).sum(1) < (RANGE_M + np.linalg.norm(halves, axis=1)) ** 2
    idx = np.flatnonzero(reach)
    cy, sy = np.cos(yaws[idx]), np.sin(yaws[idx])
    zero, one = np.zeros_like(cy), np.ones_like(cy)
    r_gb = np.stack([np.stack([cy, -sy, zero], 1), np.stack([sy, cy, zero], 1), np.stack([zero, zero, one], 1)], 1)
    r_sb = np.einsum("ij,pjk->pik", r_sg, r_gb)  # (P, 3, 3) box -> lidar
    c_s = centers[idx] @ r_sg.T + t_sg  # (P, 3)
    corners = c_s[:, None, :] + np.einsum("pij,pcj->pci", r_sb, BOX_CORNER_SIGNS[None] * halves[idx][:, None, :])
    az_c = np.arctan2(c_s[:, 1], c_s[:, 0])
    daz = np.angle(np.exp(1j * (np.arctan2(corners[..., 1], corners[..., 0]) - az_c[:, None])))
    step = 2 * np.pi / N_AZIMUTH
    c0 = np.floor((az_c + daz.min(1)) / step).astype(np.int64)
    c1 = np.ceil((az_c + daz.max(1)) / step).astype(np.int64) + 1
    inside = np.all(np.abs(np.einsum("pji,pj->pi", r_sb, -c_s)) <= halves[idx], axis=1)  # origin in box
    c0 = np.where(inside | (c1 - c0 >= N_AZIMUTH), 0, c0)
    c1 = np.where(inside | (c1 - c0 >= N_AZIMUTH), N_AZIMUTH, c1)
    orig = -np.einsum("pji,pj->pi", r_sb, c_s)  # lidar origin in each box frame
    # ground: z_global = 0 plane seen from the lidar
    n_s = r_sg @ np.array([0.0, 0.0, 1.0])
    dn = _DIRS @ n_s  # (beams, az)
    with np.errstate(divide="ignore"):
        tg = np.where(dn < -1e-9, -origin[2] / dn, np.inf)
    depth = np.minimum(tg, RANGE_M)
    ident = np.full(depth.shape, -1, np.int64)
    _cast(np.stack([c0, c1], 1), r_sb, orig, halves[idx], _DIRS, depth, ident)
    returned = (depth < RANGE_M) & (depth >= MIN_RANGE_M)  # (beams, az): ground, structure or agent hit
    hits = idx[ident[returned & (ident >= 0)]]
    counts = np.bincount(hits[hits < n_agents], minlength=n_agents)
    beam, az = np.nonzero(returned)
    points = np.zeros((len(beam), 5), np.float32)
    points[:, :3] = _DIRS[beam, az] * depth[beam, az][:, None]
    points[:, 4] = beam
    return LidarSweep(points, {a.instance_id: int(counts[i]) for i, a in enumerate(state.agents)})


def write_pcd_bin(path, points: np.ndarray) -> None:
    """Write (N, 5) points in nuScenes' LIDAR_TOP file layout (little-endian float32 rows), which
    `nuscenes.utils.data_classes.LidarPointCloud.from_file` reads."""
    if points.ndim != 2 or points.shape[1] != 5:
        raise ValueError(f"lidar points must be (N, 5), got {points.shape}")
    np.ascontiguousarray(points, dtype="<f4").tofile(path)


@njit(cache=True, nogil=True)
def _cast(cols, rsb, orig, half, dirs, depth, ident):  # pragma: no cover - compiled
    """Nearest box hit per ray over each box's azimuth columns (slab test in the box frame)."""
    nb, na = dirs.shape[0], dirs.shape[1]
    for j in range(cols.shape[0]):
        for cc in range(cols[j, 0], cols[j, 1]):
            c = cc % na
            for b in range(nb):
                tn, tf, _, _ = slab_hit(
                    dirs[b, c, 0] * rsb[j, 0, 0] + dirs[b, c, 1] * rsb[j, 1, 0] + dirs[b, c, 2] * rsb[j, 2, 0],
                    dirs[b, c, 0] * rsb[j, 0, 1] + dirs[b, c, 1] * rsb[j, 1, 1] + dirs[b, c, 2] * rsb[j, 2, 1],
                    dirs[b, c, 0] * rsb[j, 0, 2] + dirs[b, c, 1] * rsb[j, 1, 2] + dirs[b, c, 2] * rsb[j, 2, 2],
                    orig[j, 0], orig[j, 1], orig[j, 2], half[j, 0], half[j, 1], half[j, 2])
                if tn <= tf and tn > 0.0 and tn < depth[b, c]:
                    depth[b, c] = tn
                    ident[b, c] = j
