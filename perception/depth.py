"""Depth supervision of the camera features from lidar returns (BEVDepth, Li et al. 2022), a training aid.

The BEV encoder reads a camera feature into every BEV cell whose pillar projects onto it, so nothing but
the features themselves tells a near car from a far one on the same ray; `bevstream eval` shows the
placement error of far cars is mostly along the ray. This head asks the stride-16 camera features to
classify the depth of what they see, into uniform bins, against the nearest lidar return in each
feature cell (BEVDepth's target). It is off by default (`model.depth.enabled`); it runs in training only
and adds nothing to inference, unless `model.depth.attention` is on (below).

With `attention` (depth-aware cross-attention, after BEVFormer v2 / DFA3D), the head also runs at
inference and the BEV encoder reads it: each pillar point gets the probability that its pixel's surface
lies within `window_m` along the ray around the point (`depth_window_weights`), as a ratio to that of a
uniform depth (`depth_window_ratio`: 1 = no evidence either way), and a second, zero-initialised output of
each attention layer reads the context weighted by it. So a cell can tell the pixel it reads is *at* the
cell from a pixel that merely lies on the cell's ray.

    points (N, 3) global --depth_bin_targets--> (Ncam, Hf, Wf) bin index, IGNORE_INDEX where no return
    feats (B, Ncam, C, Hf, Wf) --DepthHead--> logits (B, Ncam, D, Hf, Wf); loss: cross entropy over bins
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

IGNORE_INDEX = 255  # the segmentation's ignore label, for the same purpose


@dataclass(frozen=True)
class DepthHeadConfig:
    enabled: bool = False  # build the head and train it where the data has lidar returns
    min_m: float = 1.0  # camera depth (m) of the first bin's near edge
    max_m: float = 61.0  # far edge of the last bin; returns beyond it supervise nothing
    bins: int = 60  # uniform bins of (max_m - min_m) / bins metres
    hidden_channels: int = 64
    loss_weight: float = 1.0  # of the depth term in the training total
    attention: bool = False  # the BEV encoder weights its pillar points by the predicted depth (needs enabled)
    window_m: float = 1.6  # depth window (m) centred on each pillar point: one BEV cell

    def __post_init__(self) -> None:
        if self.attention and not self.enabled:
            raise ValueError("DepthHeadConfig.attention needs the depth head: set enabled: true")
        if self.window_m <= 0:
            raise ValueError(f"DepthHeadConfig.window_m must be > 0, got {self.window_m}")
        if not 0.0 < self.min_m < self.max_m:
            raise ValueError(f"DepthHeadConfig: need 0 < min_m < max_m, got {self.min_m} and {self.max_m}")
        if self.bins < 2:
            raise ValueError(f"DepthHeadConfig.bins must be >= 2, got {self.bins}")

    def bin_of(self, depth: np.ndarray) -> np.ndarray:
        """Camera depths (m) -> bin indices (int64), IGNORE_INDEX outside [min_m, max_m)."""
        depth = np.asarray(depth, dtype=np.float64)
        idx = np.floor((depth - self.min_m) / (self.max_m - self.min_m) * self.bins)
        inside = (depth >= self.min_m) & (depth < self.max_m)
        return np.where(inside, idx, IGNORE_INDEX).astype(np.int64)

    def bin_centres(self) -> np.ndarray:
        """(bins,) the depth (m) at the middle of each bin."""
        width = (self.max_m - self.min_m) / self.bins
        return self.min_m + width * (np.arange(self.bins) + 0.5)


@dataclass(frozen=True)
class CameraGeometry:
    """Where one camera image was taken, in the model's (rectified) camera model."""

    intrinsic: np.ndarray  # (3, 3) of the rectified image
    cam_to_ego: np.ndarray  # (4, 4) rectified camera -> ego
    ego_to_global: np.ndarray  # (4, 4) the ego pose at the image's own timestamp


def project_points(points_global: np.ndarray, cam: CameraGeometry) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) global points -> pixel (u, v) (M, 2) and camera depth (M,) of those in front of the camera."""
    global_to_cam = np.linalg.inv(np.asarray(cam.ego_to_global, np.float64) @ np.asarray(cam.cam_to_ego, np.float64))
    p = np.asarray(points_global, np.float64) @ global_to_cam[:3, :3].T + global_to_cam[:3, 3]  # (N, 3) camera frame
    front = p[:, 2] > 1e-3
    p = p[front]
    uvw = p @ np.asarray(cam.intrinsic, np.float64).T  # (M, 3)
    return uvw[:, :2] / uvw[:, 2:3], p[:, 2]


def depth_bin_targets(points_global: np.ndarray | None, cameras: Sequence[CameraGeometry | None],
                      image_size: tuple[int, int], stride: int, config: DepthHeadConfig) -> torch.Tensor:
    """(Ncam, H // stride, W // stride) int64: the bin of the nearest return in each feature cell of each
    camera; IGNORE_INDEX where a cell has none, for an absent camera (None) and where there are no points."""
    h, w = image_size
    hf, wf = h // stride, w // stride
    out = np.full((len(cameras), hf, wf), IGNORE_INDEX, dtype=np.int64)
    if points_global is None or len(points_global) == 0:
        return torch.from_numpy(out)
    for k, cam in enumerate(cameras):
        if cam is None:
            continue
        uv, depth = project_points(points_global, cam)
        col, row = np.floor(uv[:, 0] / stride), np.floor(uv[:, 1] / stride)
        keep = (col >= 0) & (col < wf) & (row >= 0) & (row < hf) & (depth >= config.min_m) & (depth < config.max_m)
        cell = row[keep].astype(np.int64) * wf + col[keep].astype(np.int64)
        nearest = np.full(hf * wf, np.inf)
        np.minimum.at(nearest, cell, depth[keep])  # the first surface each cell sees
        seen = np.isfinite(nearest)
        out[k].reshape(-1)[seen] = config.bin_of(nearest[seen])
    return torch.from_numpy(out)


def depth_window_weights(logits: torch.Tensor, taps: torch.Tensor, tap_weights: torch.Tensor, point_depth: torch.Tensor,
                         config: DepthHeadConfig) -> torch.Tensor:
    """P(surface depth within +-window_m/2 of each point's depth), read at each point's pixel.

    logits (Ncam, D, Hf, Wf) of one item; taps/tap_weights (P, 4) bilinear taps into the flattened
    (Ncam*Hf*Wf) pixels (perception.bev_sampling.SampledLayout); point_depth (P,) camera depth (m).
    The bins' probabilities are summed into a CDF at the bin edges, sampled bilinearly at the point's
    pixel and interpolated linearly inside a bin (uniform density per bin). Returns (P,) in [0, 1];
    0 for a window wholly outside [min_m, max_m]."""
    ncam, d, hf, wf = logits.shape
    probs = logits.float().softmax(dim=1)  # (Ncam, D, Hf, Wf)
    cdf = torch.cat([torch.zeros_like(probs[:, :1]), probs.cumsum(dim=1)], dim=1)  # (Ncam, D+1, Hf, Wf)
    rows = cdf.permute(0, 2, 3, 1).reshape(ncam * hf * wf, d + 1)
    point_cdf = F.embedding_bag(taps, rows, per_sample_weights=tap_weights.to(rows.dtype), mode="sum")  # (P, D+1)
    width = (config.max_m - config.min_m) / config.bins

    def cdf_at(depth: torch.Tensor) -> torch.Tensor:
        t = ((depth - config.min_m) / width).clamp(0, d)  # fractional bin edge index, (P,)
        lo = t.floor().long().clamp(max=d - 1)
        below = point_cdf.gather(1, lo[:, None])[:, 0]
        above = point_cdf.gather(1, lo[:, None] + 1)[:, 0]
        return below + (t - lo) * (above - below)

    half = config.window_m / 2
    depth = point_depth.to(rows.dtype)
    return (cdf_at(depth + half) - cdf_at(depth - half)).clamp_min(0.0)


def depth_window_ratio(logits: torch.Tensor, taps: torch.Tensor, tap_weights: torch.Tensor, point_depth: torch.Tensor,
                       config: DepthHeadConfig) -> torch.Tensor:
    """`depth_window_weights` over the same probability for a uniform depth on [min_m, max_m): how many times
    likelier the predicted depth puts the surface at the point (P,), >= 0; 1 where the head is undecided.
    The scale matters to training: the attention's depth output reads context x ratio, and Adam moves its
    weights by steps of the same size whatever the input's scale, so a probability (~0.03 when undecided)
    would leave that output ~30x slower to grow."""
    prior = config.window_m / (config.max_m - config.min_m)
    return depth_window_weights(logits, taps, tap_weights, point_depth, config) / prior


class DepthHead(nn.Module):
    """Stride-16 camera features -> per-cell depth-bin logits: 3x3 conv-BN-ReLU, then 1x1 to the bins."""

    def __init__(self, in_channels: int, config: DepthHeadConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, config.hidden_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(config.hidden_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(config.hidden_channels, config.bins, 1),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, Ncam, C, Hf, Wf) -> (B, Ncam, D, Hf, Wf)."""
        b, n = feats.shape[:2]
        logits = self.net(feats.flatten(0, 1))  # (B*Ncam, D, Hf, Wf)
        return logits.view(b, n, *logits.shape[1:])

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor, camera_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross entropy over the supervised cells (zero, with a gradient path, where there are none).

        logits (B, Ncam, D, Hf, Wf); targets (B, Ncam, Hf, Wf) bin indices or IGNORE_INDEX."""
        targets = targets.long()
        if camera_mask is not None:  # no supervision for a camera the model did not see
            targets = targets.masked_fill(~camera_mask.bool()[:, :, None, None], IGNORE_INDEX)
        if not (targets != IGNORE_INDEX).any():
            return logits.sum() * 0.0
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(0, 1), ignore_index=IGNORE_INDEX)

