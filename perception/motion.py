"""Motion fusion: the current BEV feature beside the ego-motion-aligned recent ones, through convs (BEVDet4D).

The video module's attention pools the queue entries into one weighted sum per cell, which keeps what
was there but not *where it moved*: a diagnostic on the stage-3 weights showed velocity error almost
unchanged with the state reset every tick. Velocity is a displacement over a time offset, which a
convolution over the stacked aligned rasters can read directly: an object at cell c now and at c - v*dt
in the entry dt seconds old. Each time-queue entry brings its compressed feature, its time offset and a
mask of the cells it saw (all zero where the entry is invalid or the cell fell outside it).

Two paths read the stacked rasters. The narrow one (1x1, 3x3, 1x1) sees one cell around each cell
(+-1.6 m): a car at 10 m/s leaves that within two frames, so the older entries, which give the longer
and more precise displacement baseline, were out of its reach. The wide one adds two 3x3 convs dilated
by `wide_dilation` d, reaching +-2d cells (d = 2: +-6.4 m, what a car at 19 m/s covers in the ~0.33 s
the 4-entry time queue spans at 12 Hz) in steps of d: offsets 0, d, 2d. With d = 2 the narrow path
covers 1, and 3 is left to the heads' 3x3 convs that follow (features of a 3-cell car are smooth
across a cell); a hole-free pair would be dilations 1 and 3.

Each path's last conv starts at zero, so a model grown with a path from weights trained without it
computes exactly what they computed until training moves it (lab.training.ZERO_INIT_BRANCHES).
"""
from __future__ import annotations

import torch
from torch import nn


class MotionFusion(nn.Module):
    """(current entry (B, Cq, H, W), aligned past entries (B, Lt, Cq, H, W), seen (B, Lt, H, W), dt (B, Lt)
    -> residual (B, C, H, W) for the fused BEV feature."""

    def __init__(self, queue_channels: int, entries: int, channels: int, hidden: int, wide_dilation: int = 0) -> None:
        super().__init__()
        if wide_dilation < 0:
            raise ValueError(f"MotionFusion: wide_dilation must be >= 0 (0 = no wide path), got {wide_dilation}")
        self.entries = entries
        in_ch = queue_channels + entries * (queue_channels + 2)
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )
        d = wide_dilation
        self.wide = nn.Sequential(
            nn.Conv2d(in_ch, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=d, dilation=d),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=d, dilation=d),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        ) if d > 0 else None
        for path in (self.net, self.wide):
            if path is not None:
                nn.init.zeros_(path[-1].weight)
                nn.init.zeros_(path[-1].bias)

    def forward(self, current: torch.Tensor, past: torch.Tensor, seen: torch.Tensor, dt_s: torch.Tensor) -> torch.Tensor:
        b, lt, cq, h, w = past.shape
        if lt != self.entries:
            raise ValueError(f"MotionFusion: {lt} past entries, built for {self.entries}")
        m = seen.to(past.dtype)[:, :, None]  # (B, Lt, 1, H, W)
        dt = dt_s.to(past.dtype)[:, :, None, None, None] * m  # (B, Lt, 1, H, W) seconds, 0 where unseen
        z = torch.cat([current, (past * m).flatten(1, 2), dt.flatten(1, 2), m.flatten(1, 2)], dim=1)  # (B, Cin, H, W)
        out = self.net(z)  # (B, C, H, W)
        return out + self.wide(z) if self.wide is not None else out
