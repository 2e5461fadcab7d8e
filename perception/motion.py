"""Motion fusion: the current BEV feature beside the ego-motion-aligned recent ones, through convs (BEVDet4D).

The video module's attention pools the queue entries into one weighted sum per cell, which keeps what
was there but not *where it moved*: a diagnostic on the stage-3 weights showed velocity error almost
unchanged with the state reset every tick. Velocity is a displacement over a time offset, which a
convolution over the stacked aligned rasters can read directly: an object at cell c now and at c - v*dt
in the entry dt seconds old. Each time-queue entry brings its compressed feature, its time offset and a
mask of the cells it saw (all zero where the entry is invalid or the cell fell outside it).

The last conv starts at zero, so a model grown with this branch from weights trained without it
computes exactly what they computed until training moves it (`zero_init_prefixes`).
"""
from __future__ import annotations

import torch
from torch import nn


class MotionFusion(nn.Module):
    """(current entry (B, Cq, H, W), aligned past entries (B, Lt, Cq, H, W), seen (B, Lt, H, W), dt (B, Lt)
    -> residual (B, C, H, W) for the fused BEV feature."""

    def __init__(self, queue_channels: int, entries: int, channels: int, hidden: int) -> None:
        super().__init__()
        self.entries = entries
        in_ch = queue_channels + entries * (queue_channels + 2)
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, current: torch.Tensor, past: torch.Tensor, seen: torch.Tensor, dt_s: torch.Tensor) -> torch.Tensor:
        b, lt, cq, h, w = past.shape
        if lt != self.entries:
            raise ValueError(f"MotionFusion: {lt} past entries, built for {self.entries}")
        m = seen.to(past.dtype)[:, :, None]  # (B, Lt, 1, H, W)
        dt = dt_s.to(past.dtype)[:, :, None, None, None] * m  # (B, Lt, 1, H, W) seconds, 0 where unseen
        z = torch.cat([current, (past * m).flatten(1, 2), dt.flatten(1, 2), m.flatten(1, 2)], dim=1)  # (B, Cin, H, W)
        return self.net(z)
