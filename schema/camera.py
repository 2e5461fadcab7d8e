"""Pinhole camera helpers shared by the sources and the model (numpy only)."""
from __future__ import annotations

import numpy as np


def scale_intrinsic(k: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsic for an image resized by (sx, sy), pixel centres at integers."""
    out = k.astype(np.float64).copy()
    out[0, 0] *= sx
    out[0, 1] *= sx
    out[0, 2] = (k[0, 2] + 0.5) * sx - 0.5
    out[1, 1] *= sy
    out[1, 2] = (k[1, 2] + 0.5) * sy - 0.5
    return out
