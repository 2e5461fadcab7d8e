"""The renderer's compiled per-pixel loops (numba): ground shading, box ray casting, near-plane clipping
and the final float to uint8 conversion. replay.sim.render prepares their inputs in numpy.

Each loop is single-threaded and visits pixels and boxes in a fixed order, so the same inputs give
byte-identical images.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from replay.sim.slab import slab_hit


@njit(cache=True, nogil=True)
def shade_ground(gidx, gx, gy, c, s, tx, ty, material, noise, mat_rgb, mat_noise, mat_label, keep, haze_add,
                  rgb, label, depth, ground_depth):  # pragma: no cover - compiled
    """Colour and label the ground pixels from the material raster (nearest texel) and the noise tile,
    skipping those a box covers (depth nearer than the ground's)."""
    hh, ww = material.shape
    for n in range(gidx.shape[0]):
        if depth[gidx[n]] < ground_depth[gidx[n]]:
            continue
        fx = c * gx[n] - s * gy[n] + tx
        fy = s * gx[n] + c * gy[n] + ty
        fx = min(max(fx, 0.0), ww - 1.0)
        fy = min(max(fy, 0.0), hh - 1.0)
        ix, iy = int(fx), int(fy)
        m = material[iy, ix]
        sc = (1.0 + mat_noise[m] * noise[((iy & 1023) << 10) | (ix & 1023)]) * keep[n]
        p = gidx[n]
        for ch in range(3):
            rgb[p, ch] = mat_rgb[m, ch] * sc + haze_add[n, ch]
        label[p] = mat_label[m]


@njit(cache=True, nogil=True)
def cast_boxes(order, rects, rcb, orig, half, zmin, shade, labels, xcol, yrow, ray_len, depth, rgb, label, near,
                haze):  # pragma: no cover - compiled
    """Slab-test every pixel of each box's rectangle; keep the nearest hit (depth buffer) and shade its face."""
    for n in range(order.shape[0]):
        j = order[n]
        x0, y0, x1, y1 = rects[j, 0], rects[j, 1], rects[j, 2], rects[j, 3]
        hidden = True  # cull boxes whose whole rectangle is already nearer
        for y in range(y0, y1):
            for x in range(x0, x1):
                if depth[y, x] > zmin[j]:
                    hidden = False
                    break
            if not hidden:
                break
        if hidden:
            continue
        # a pixel already nearer than the box's nearest corner cannot be hit nearer (margin: the
        # float32 rounding of tn), so its slab test is skipped: same result, less work behind
        zskip = zmin[j] * (1.0 - 1e-3) - 0.05
        for y in range(y0, y1):
            yy = yrow[y]
            for x in range(x0, x1):
                if depth[y, x] < zskip:
                    continue
                xx = xcol[x]
                tn, tf, ax, dsel = slab_hit(
                    xx * rcb[j, 0, 0] + yy * rcb[j, 1, 0] + rcb[j, 2, 0],
                    xx * rcb[j, 0, 1] + yy * rcb[j, 1, 1] + rcb[j, 2, 1],
                    xx * rcb[j, 0, 2] + yy * rcb[j, 1, 2] + rcb[j, 2, 2],
                    orig[j, 0], orig[j, 1], orig[j, 2], half[j, 0], half[j, 1], half[j, 2])
                if tn > tf or tn <= near or tn >= depth[y, x]:
                    continue
                depth[y, x] = tn
                face = ax * 2 + (1 if dsel < 0 else 0)  # the outward normal opposes the ray
                fog = min(max((tn * ray_len[y, x] - 40.0) / 400.0, 0.0), 0.75)
                for ch in range(3):
                    rgb[y, x, ch] = shade[j, face, ch] * (1.0 - fog) + haze[ch] * fog
                label[y, x] = labels[j]


@njit(cache=True, nogil=True)
def clip_near(corners: np.ndarray, near: float) -> np.ndarray:  # pragma: no cover - compiled
    """Points of a box (8 corners, camera frame) in front of the near plane z = near, plus its edges' crossings."""
    out = np.empty((20, 3))
    n = 0
    for a in range(8):
        if corners[a, 2] > near:
            out[n] = corners[a]
            n += 1
    for a in range(8):
        for bit in (1, 2, 4):  # corners differing in one sign bit share an edge
            b = a ^ bit
            if b < a:
                continue
            za, zb = corners[a, 2], corners[b, 2]
            if (za - near) * (zb - near) < 0:
                t = (near - za) / (zb - za)
                out[n] = corners[a] + t * (corners[b] - corners[a])
                n += 1
    return out[:n]


@njit(cache=True, nogil=True)
def to_uint8(rgb: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """(H, W, 3) float32 -> uint8 with clipping (truncation, like astype)."""
    h, w, _ = rgb.shape
    out = np.empty((h, w, 3), np.uint8)
    for y in range(h):
        for x in range(w):
            for c in range(3):
                v = rgb[y, x, c]
                out[y, x, c] = 0 if v < 0 else (255 if v > 255 else np.uint8(v))
    return out
