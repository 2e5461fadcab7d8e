"""The BEV grid: which patch of the ground around the ego car each raster cell covers.

Ego frame as in nuScenes: x forward, y left, z up. Row i runs along x (i = 0 at x_min), column j
along y (j = 0 at y_min); cell (i, j) covers [x_min + i*res, x_min + (i+1)*res) x [y_min + j*res, ...).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BEVGrid:
    x_min: float = -51.2
    x_max: float = 51.2
    y_min: float = -51.2
    y_max: float = 51.2
    resolution: float = 1.6  # metres per cell: 64 x 64 cells over +-51.2 m

    def __post_init__(self) -> None:
        if not self.resolution > 0:  # also NaN
            raise ValueError(f"BEVGrid: resolution must be > 0 metres, got {self.resolution}")
        for name, lo, hi in (("x", self.x_min, self.x_max), ("y", self.y_min, self.y_max)):
            if not hi > lo:
                raise ValueError(f"BEVGrid: {name}_max ({hi}) must exceed {name}_min ({lo})")
            cells = (hi - lo) / self.resolution
            if abs(cells - round(cells)) > 1e-6:
                raise ValueError(f"BEVGrid: {name} range {hi - lo} m is not a whole number of {self.resolution} m cells")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) = (cells along x, cells along y)."""
        return (round((self.x_max - self.x_min) / self.resolution), round((self.y_max - self.y_min) / self.resolution))

    def cell_centers(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """(H, W, 2) ego-frame (x, y) of every cell centre."""
        h, w = self.shape
        xs = self.x_min + (torch.arange(h, device=device, dtype=dtype) + 0.5) * self.resolution
        ys = self.y_min + (torch.arange(w, device=device, dtype=dtype) + 0.5) * self.resolution
        return torch.stack(torch.meshgrid(xs, ys, indexing="ij"), dim=-1)

    def to_cell(self, xy: torch.Tensor) -> torch.Tensor:
        """(..., 2) ego-frame (x, y) -> (..., 2) continuous (i, j) cell coordinates (cell centre = k + 0.5)."""
        return torch.stack(((xy[..., 0] - self.x_min) / self.resolution, (xy[..., 1] - self.y_min) / self.resolution), dim=-1)
