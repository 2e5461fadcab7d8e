"""Where the BEV encoder's queries look: the raster positional encoding of the cells, each feature pixel's ray,
and the sampled-attention layout (which camera pixels each cell's pillar points read, with their bilinear taps).
All of it depends only on the grid and the calibration, so the encoder builds it once and caches it."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from perception.grid import BEVGrid


def raster_encoding(h: int, w: int, channels: int) -> torch.Tensor:
    """(channels, h, w) 2D sinusoidal encoding: channels/4 frequencies per axis, sin and cos."""
    f = channels // 4
    freqs = torch.exp(-math.log(1000.0) * torch.arange(f, dtype=torch.float32) / max(f, 1))  # (f,)
    i = torch.arange(h, dtype=torch.float32)[:, None] * freqs  # (h, f)
    j = torch.arange(w, dtype=torch.float32)[:, None] * freqs  # (w, f)
    ei = torch.cat([i.sin(), i.cos()], dim=1)  # (h, 2f)
    ej = torch.cat([j.sin(), j.cos()], dim=1)  # (w, 2f)
    enc = torch.cat([ei[:, None, :].expand(h, w, 2 * f), ej[None, :, :].expand(h, w, 2 * f)], dim=-1)
    return enc.permute(2, 0, 1).contiguous()


def pixel_rays(intrinsics: torch.Tensor, cam_to_ego: torch.Tensor, feat_size: tuple[int, int], stride: int) -> torch.Tensor:
    """(..., 3, 3), (..., 4, 4) -> (..., Hf, Wf, 3) unit ego-frame ray of each feature pixel's centre."""
    hf, wf = feat_size
    dev, dt = intrinsics.device, intrinsics.dtype
    v = torch.arange(hf, device=dev, dtype=dt) * stride + (stride - 1) / 2.0
    u = torch.arange(wf, device=dev, dtype=dt) * stride + (stride - 1) / 2.0
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    pix = torch.stack([uu, vv, torch.ones_like(uu)], dim=-1)  # (Hf, Wf, 3)
    kinv = torch.linalg.inv(intrinsics)  # (..., 3, 3)
    rot = cam_to_ego[..., :3, :3] @ kinv  # (..., 3, 3)
    rays = torch.einsum("...ij,hwj->...hwi", rot, pix)
    return F.normalize(rays, dim=-1)


@dataclass
class SampledLayout:
    """Which camera pixels each BEV cell reads: built once per calibration.

    Every (cell, pillar height, camera) point that lands inside an image is one key. Points are sorted
    by cell; each reads its feature by bilinear interpolation, stored as 4 taps into the flattened
    (Ncam*Hf*Wf) feature pixels so one `embedding_bag` gathers them all (zeros padding: weight 0).
    """

    point_cell: torch.Tensor  # (P,) long, sorted: BEV cell (i*W + j) of each point
    point_cam: torch.Tensor  # (P,) long: camera of each point
    point_grid: torch.Tensor  # (P, 2) grid_sample coords (align_corners=False) in its camera's image
    taps: torch.Tensor  # (P, 4) long: flattened feature pixels (cam*Hf*Wf + y*Wf + x)
    weights: torch.Tensor  # (P, 4) float: bilinear weights of the taps
    point_depth: torch.Tensor  # (P,) float: depth (m) of each point in its camera
    fine_taps: torch.Tensor | None = None  # (P, 4) long: the same points' taps into the stride-8 map (fine level)
    fine_weights: torch.Tensor | None = None  # (P, 4) float


def bilinear_taps(cam: torch.Tensor, grid_xy: torch.Tensor, feat_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(P,) cameras, (P, 2) grid_sample coords -> (P, 4) tap indices and weights reproducing
    F.grid_sample(bilinear, padding_mode='zeros', align_corners=False) on (Ncam, C, Hf, Wf) features."""
    hf, wf = feat_size
    g = grid_xy.double()
    x = ((g[:, 0] + 1) * wf - 1) / 2
    y = ((g[:, 1] + 1) * hf - 1) / 2
    x0, y0 = torch.floor(x), torch.floor(y)
    taps, weights = [], []
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wgt = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            ok = (xi >= 0) & (xi < wf) & (yi >= 0) & (yi < hf)
            taps.append(torch.where(ok, cam * hf * wf + yi.clamp(0, hf - 1).long() * wf + xi.clamp(0, wf - 1).long(), 0))
            weights.append(torch.where(ok, wgt, 0.0))
    return torch.stack(taps, 1), torch.stack(weights, 1).float()


def build_sampled_layout(
    grid: BEVGrid, heights: tuple[float, ...], intrinsics: torch.Tensor, cam_to_ego: torch.Tensor, image_size: tuple[int, int],
    feat_size: tuple[int, int] | None = None, fine_size: tuple[int, int] | None = None,
) -> SampledLayout:
    """Project every cell's pillar points into every camera; keep those in front and inside the image.
    With `fine_size` (the stride-8 map's (h, w)) the points also get taps into that map."""
    h_img, w_img = image_size
    centers = grid.cell_centers(dtype=torch.float64).reshape(-1, 2)  # (HW, 2)
    hw, nz = centers.shape[0], len(heights)
    z = torch.tensor(heights, dtype=torch.float64)
    pts = torch.cat([centers[:, None, :].expand(hw, nz, 2), z[None, :, None].expand(hw, nz, 1)], dim=-1)  # (HW, Z, 3)
    k = intrinsics.double()
    t = cam_to_ego.double()
    cam_pts = torch.einsum("cji,cpzj->cpzi", t[:, :3, :3], pts[None] - t[:, None, None, :3, 3])  # R^T (X - t): (Ncam, HW, Z, 3)
    depth = cam_pts[..., 2]
    uvw = torch.einsum("cij,cpzj->cpzi", k, cam_pts)
    uv = uvw[..., :2] / depth.clamp(min=1e-6)[..., None]
    valid = (depth > 0.1) & (uv[..., 0] >= -0.5) & (uv[..., 0] <= w_img - 0.5) & (uv[..., 1] >= -0.5) & (uv[..., 1] <= h_img - 0.5)
    gxy = torch.stack([(2 * uv[..., 0] + 1) / w_img - 1, (2 * uv[..., 1] + 1) / h_img - 1], dim=-1)  # (Ncam, HW, Z, 2)
    cam_i, cell_i, _ = valid.nonzero(as_tuple=True)
    order = torch.sort(cell_i, stable=True).indices
    point_cam, point_cell = cam_i[order], cell_i[order]
    point_grid = gxy[valid][order].float()
    feat_size = feat_size or (h_img // 16, w_img // 16)
    taps, weights = bilinear_taps(point_cam, point_grid, feat_size)
    fine_taps, fine_weights = bilinear_taps(point_cam, point_grid, fine_size) if fine_size is not None else (None, None)
    return SampledLayout(point_cell=point_cell, point_cam=point_cam, point_grid=point_grid, taps=taps, weights=weights,
                         point_depth=depth[valid][order].float(), fine_taps=fine_taps, fine_weights=fine_weights)
