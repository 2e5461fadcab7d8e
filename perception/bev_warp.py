"""2D rigid geometry of BEV rasters (numpy float64 for the tiny per-tick matrices) and the warp of a raster
into another frame (`affine_grid` + `grid_sample`): the video module's ego-motion alignment and its world-fixed
GRU raster (perception.video re-exports these names).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from perception.grid import BEVGrid


# ---------------------------------------------------------------- 2D rigid geometry (numpy float64)
# Tiny per-tick matrices live in numpy: a few dozen torch ops on 3x3 tensors cost more than the warps.


def pose_to_2d(m: np.ndarray) -> np.ndarray:
    """(..., 4, 4) ego->global -> (..., 3, 3) planar transform (yaw about z, x/y translation)."""
    m = np.asarray(m, dtype=np.float64)
    yaw = np.arctan2(m[..., 1, 0], m[..., 0, 0])
    c, s = np.cos(yaw), np.sin(yaw)
    out = np.zeros(m.shape[:-2] + (3, 3))
    out[..., 0, 0], out[..., 0, 1], out[..., 1, 0], out[..., 1, 1] = c, -s, s, c
    out[..., 0, 2], out[..., 1, 2], out[..., 2, 2] = m[..., 0, 3], m[..., 1, 3], 1.0
    return out


def metric_to_norm(x_min, x_max, y_min, y_max) -> np.ndarray:
    """(..., 3, 3) map metric (x, y, 1) -> grid_sample coords (col, row, 1) of a raster whose rows run
    along x and columns along y (align_corners=False: -1 and +1 are the raster's outer edges)."""
    x_min, x_max, y_min, y_max = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x_min, x_max, y_min, y_max)))
    xr, yr = x_max - x_min, y_max - y_min
    out = np.zeros(x_min.shape + (3, 3))
    out[..., 0, 1] = 2.0 / yr
    out[..., 0, 2] = -1.0 - 2.0 * y_min / yr
    out[..., 1, 0] = 2.0 / xr
    out[..., 1, 2] = -1.0 - 2.0 * x_min / xr
    out[..., 2, 2] = 1.0
    return out


def grid_norm(grid: BEVGrid) -> np.ndarray:
    return metric_to_norm(grid.x_min, grid.x_max, grid.y_min, grid.y_max)


def inv_affine_2d(m: np.ndarray) -> np.ndarray:
    """Inverse of (..., 3, 3) planar affine transforms (last row 0 0 1) in closed form: np.linalg.inv on
    a 3x3 goes through LAPACK (tens of us, and ms-long stalls of OpenBLAS's threads on a loaded machine)."""
    m = np.asarray(m, dtype=np.float64)
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    tx, ty = m[..., 0, 2], m[..., 1, 2]
    det = a * d - b * c
    out = np.zeros(m.shape)
    out[..., 0, 0], out[..., 0, 1], out[..., 1, 0], out[..., 1, 1] = d / det, -b / det, -c / det, a / det
    out[..., 0, 2] = -(out[..., 0, 0] * tx + out[..., 0, 1] * ty)
    out[..., 1, 2] = -(out[..., 1, 0] * tx + out[..., 1, 1] * ty)
    out[..., 2, 2] = 1.0
    return out


def affine_theta(src_from_dst: np.ndarray, norm_src: np.ndarray, norm_dst: np.ndarray) -> np.ndarray:
    """(N, 2, 3) affine_grid theta: destination grid coords -> source grid coords."""
    return (norm_src @ src_from_dst @ inv_affine_2d(norm_dst))[:, :2, :]


_BASE_GRIDS: dict[tuple, torch.Tensor] = {}


def affine_grid(theta: torch.Tensor, size: list[int], box: tuple[int, int, int, int] | None = None, reuse_base: bool = False) -> torch.Tensor:
    """F.affine_grid(theta, size, align_corners=False)[:, i0:i1, j0:j1] for box (i0, i1, j0, j1) (default: all):
    (N, 2, 3) -> (N, i1-i0, j1-j0, 2). With `reuse_base` and no autograd the same values, with the (H*W, 3)
    base grid built once per (H, W, dtype, device) instead of every call and only the box's cells computed."""
    n, _, h, w = size
    i0, i1, j0, j1 = box if box is not None else (0, h, 0, w)
    if torch.is_grad_enabled() or not reuse_base:
        return F.affine_grid(theta, size, align_corners=False)[:, i0:i1, j0:j1]
    key = (h, w, theta.dtype, theta.device)
    base = _BASE_GRIDS.get(key)
    if base is None:
        eye = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=theta.dtype, device=theta.device)
        xy = F.affine_grid(eye, [1, 1, h, w], align_corners=False).view(h * w, 2)
        base = _BASE_GRIDS[key] = torch.cat([xy, torch.ones(h * w, 1, dtype=theta.dtype, device=theta.device)], 1)  # (HW, 3)
    if box is not None:
        base = base.view(h, w, 3)[i0:i1, j0:j1].reshape(-1, 3)
    return torch.matmul(base, theta.transpose(1, 2)).view(n, i1 - i0, j1 - j0, 2)  # as affine_grid: base (x, y, 1) @ theta^T


def warp_raster(src: torch.Tensor, src_from_dst: np.ndarray, norm_src: np.ndarray, norm_dst: np.ndarray, out_hw: tuple[int, int], padding_mode: str = "zeros", return_inside: bool = False,
                reuse_base: bool = False):
    """Resample raster `src` (N, C, Hs, Ws) onto a destination raster (N, C, out_hw).

    src_from_dst (N, 3, 3) maps destination metric coords to source metric coords; norm_* (N or 1, 3, 3)
    map each raster's metric coords to its grid_sample coords. With return_inside, also (N, out_hw) bool:
    the destination cell centre falls inside the source raster. `reuse_base`: see `affine_grid`.
    """
    theta = torch.from_numpy(np.ascontiguousarray(affine_theta(src_from_dst, norm_src, norm_dst))).to(device=src.device, dtype=src.dtype)
    g = affine_grid(theta, [src.shape[0], src.shape[1], *out_hw], reuse_base=reuse_base)
    out = F.grid_sample(src, g, mode="bilinear", padding_mode=padding_mode, align_corners=False)
    if return_inside:
        return out, (g.abs() <= 1.0).all(dim=-1)
    return out
