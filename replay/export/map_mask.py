"""The map mask PNG the devkit opens at load (`maps/<token>.png`) and the road geometry JSON.

The devkit's MapMask reads a single-channel PNG at 0.1 m/pixel whose pixel (0, H-1) is the global
origin: pixel column = x / 0.1, row = H - y / 0.1, foreground 255. We paint a drivable-area-like
mask: every lane divider widened to two lane widths (the lanes on either side of it) and every
road edge widened a little, which covers the carriageway between the curbs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

MAP_RESOLUTION_M = 0.1  # the devkit's default (and minimum) map resolution
LANE_WIDTH_M = 3.5
MARGIN_M = 20.0  # mask extends this far beyond the road geometry


def drivable_mask(polylines: Sequence[Any], resolution: float = MAP_RESOLUTION_M) -> np.ndarray:
    """(H, W) uint8 mask, 255 on the road, in the devkit's map-mask pixel convention.

    Covers global x in [0, max x + margin] and y in [0, max y + margin]; geometry at negative
    coordinates cannot be represented in this format and is clipped (the exporter keeps the
    world in the positive quadrant).
    """
    if not polylines:
        raise ValueError("no road geometry to draw a map mask from")
    pts = np.concatenate([np.asarray(p.points, dtype=np.float64).reshape(-1, 2) for p in polylines])
    width = int(np.ceil((max(pts[:, 0].max(), 0.0) + MARGIN_M) / resolution))
    height = int(np.ceil((max(pts[:, 1].max(), 0.0) + MARGIN_M) / resolution))
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    for line in polylines:
        xy = np.asarray(line.points, dtype=np.float64).reshape(-1, 2)
        px = np.stack([xy[:, 0] / resolution, height - xy[:, 1] / resolution], axis=1)
        stroke_m = 2 * LANE_WIDTH_M if line.kind == "lane_divider" else 0.5
        draw.line([tuple(p) for p in px.tolist()], fill=255, width=max(1, int(round(stroke_m / resolution))), joint="curve")
    return np.asarray(image)


def drivable_mask_from_ground(material: np.ndarray, origin: Sequence[float], ground_resolution: float,
                              drivable_values: Sequence[int], resolution: float = MAP_RESOLUTION_M) -> np.ndarray:
    """(H, W) uint8 devkit map mask from a top-down material raster (row = y index from `origin`).

    Pixels whose material is one of `drivable_values` (road surface and its markings) are 255.
    The raster is resampled (nearest) to `resolution` and placed so that the mask's pixel
    column = x / resolution and row = H - y / resolution, as MapMask reads it.
    """
    material = np.asarray(material)
    if material.ndim != 2:
        raise ValueError(f"material raster must be (H, W), got {material.shape}")
    ox, oy = float(origin[0]), float(origin[1])
    if ox < 0 or oy < 0:
        raise ValueError(f"the devkit's map mask cannot hold negative coordinates (raster origin {ox}, {oy})")
    xmax = ox + material.shape[1] * ground_resolution
    ymax = oy + material.shape[0] * ground_resolution
    width, height = int(np.ceil(xmax / resolution)), int(np.ceil(ymax / resolution))
    # global centre of every mask column / row, then the raster cell it falls in
    x = (np.arange(width) + 0.5) * resolution
    y = (height - np.arange(height) - 0.5) * resolution
    col = np.floor((x - ox) / ground_resolution).astype(np.int64)
    row = np.floor((y - oy) / ground_resolution).astype(np.int64)
    col_ok = (col >= 0) & (col < material.shape[1])
    row_ok = (row >= 0) & (row < material.shape[0])
    lut = np.zeros(256, dtype=np.uint8)
    lut[np.asarray(drivable_values, dtype=np.int64)] = 255
    mask = np.zeros((height, width), dtype=np.uint8)
    c0, r0 = ox / resolution, oy / resolution
    if abs(ground_resolution - resolution) < 1e-12 and c0 == round(c0) and r0 == round(r0):
        # same grid: flip rows (the mask's row 0 is the top) and shift; no resampling
        c0, r0 = int(round(c0)), int(round(r0))
        mask[height - r0 - material.shape[0]:height - r0, c0:c0 + material.shape[1]] = lut[material[::-1]]
        return mask
    rows = material.take(row[row_ok], axis=0)  # (h', W_raster)
    mask[np.flatnonzero(row_ok)[0]:np.flatnonzero(row_ok)[-1] + 1, np.flatnonzero(col_ok)[0]:np.flatnonzero(col_ok)[-1] + 1] = \
        lut[rows.take(col[col_ok], axis=1)]
    return mask


def write_mask_png(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path, format="PNG", compress_level=6)


def write_map_mask(path: Path, polylines: Sequence[Any]) -> None:
    """Map mask drawn from road polylines (for worlds without a ground raster)."""
    write_mask_png(path, drivable_mask(polylines))


def road_geometry_record(scene_name: str, polylines: Sequence[Any]) -> dict:
    """The road geometry JSON of replay/layout.py: ordered polylines in global coordinates."""
    record: dict = {"scene": scene_name, "frame": "global", "lane_divider": [], "road_edge": []}
    for line in polylines:
        points = [[round(float(x), 4), round(float(y), 4)] for x, y in np.asarray(line.points).reshape(-1, 2)]
        if line.kind == "lane_divider":
            record["lane_divider"].append({"points": points, "dashed": bool(line.dashed)})
        elif line.kind == "road_edge":
            record["road_edge"].append({"points": points})
        else:
            raise ValueError(f"unknown polyline kind {line.kind!r}; expected 'lane_divider' or 'road_edge'")
    return record


def write_road_geometry(path: Path, scene_name: str, polylines: Sequence[Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(road_geometry_record(scene_name, polylines), separators=(",", ":")))
