"""Road geometry head: BEV masks of lane dividers and road edges, and their vectorisation into ordered polylines.

Masks live on the BEV grid refined `upsample` times (pixel (i, j) covers x_min + i*res/up ..., as in BEVGrid).
Vectorisation: threshold -> skeletonize (scikit-image) -> trace 8-connected skeleton pixels into ordered
paths (numba) -> ego metres -> moving-average smoothing -> Douglas-Peucker simplification (shapely); each polyline is scored by the mean
probability along its path (what Chamfer-distance AP ranks by).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
import torch
import torch.nn.functional as F
from numba import njit
from shapely.geometry import LineString
from skimage.morphology import skeletonize
from torch import Tensor, nn

from schema.classes import ROAD_CLASSES
from perception.grid import BEVGrid


@dataclass(frozen=True)
class RoadHeadConfig:
    hidden_channels: int = 32  # width of the conv / transposed-conv layers
    upsample: int = 2  # output raster = BEV grid x upsample (0.8 m pixels on the default grid)
    pos_weight: float = 4.0  # BCE weight of line pixels (thin lines are a small fraction of the raster)
    thickness_m: float = 1.0  # line width when rasterising ground truth (keep in step with the data pipeline)
    threshold: float = 0.5  # probability above which a pixel is part of a line
    min_length_m: float = 2.0  # shorter traced paths are dropped as noise
    simplify_m: float = 0.2  # Douglas-Peucker tolerance

    def __post_init__(self) -> None:
        if self.upsample not in (1, 2, 4):
            raise ValueError(f"RoadHeadConfig: upsample must be 1, 2 or 4, got {self.upsample}")


def raster_shape(grid: BEVGrid, upsample: int) -> tuple[int, int]:
    h, w = grid.shape
    return h * upsample, w * upsample


def rasterize_polylines(polylines: list[np.ndarray], grid: BEVGrid, upsample: int, thickness_m: float) -> np.ndarray:
    """Ego-frame (N, 2) polylines -> (H_r, W_r) uint8 mask: 1 where a pixel centre lies within thickness/2 of a segment.

    The half-width is at least half a pixel so that lines thinner than a pixel still draw a connected chain.
    """
    hr, wr = raster_shape(grid, upsample)
    res = grid.resolution / upsample
    half = max(thickness_m / 2, res / 2)
    mask = np.zeros((hr, wr), dtype=np.uint8)
    for line in polylines:
        line = np.asarray(line, dtype=np.float64)
        if line.ndim != 2 or line.shape[1] != 2:
            raise ValueError(f"rasterize_polylines: polylines must be (N, 2) arrays, got shape {line.shape}")
        if len(line) == 1:
            line = np.repeat(line, 2, axis=0)
        # continuous pixel coordinates: pixel centre k sits at k + 0.5
        pts = np.stack(((line[:, 0] - grid.x_min) / res, (line[:, 1] - grid.y_min) / res), axis=1)
        hp = half / res
        for p, q in zip(pts[:-1], pts[1:]):
            i0 = max(int(np.floor(min(p[0], q[0]) - hp - 0.5)), 0)
            i1 = min(int(np.ceil(max(p[0], q[0]) + hp + 0.5)), hr)
            j0 = max(int(np.floor(min(p[1], q[1]) - hp - 0.5)), 0)
            j1 = min(int(np.ceil(max(p[1], q[1]) + hp + 0.5)), wr)
            if i0 >= i1 or j0 >= j1:
                continue
            ii, jj = np.meshgrid(np.arange(i0, i1) + 0.5, np.arange(j0, j1) + 0.5, indexing="ij")
            d = q - p
            den = float(d @ d)
            t = np.zeros_like(ii) if den == 0 else np.clip(((ii - p[0]) * d[0] + (jj - p[1]) * d[1]) / den, 0, 1)
            dist2 = (ii - p[0] - t * d[0]) ** 2 + (jj - p[1] - t * d[1]) ** 2
            mask[i0:i1, j0:j1] |= (dist2 <= hp * hp + 1e-9).astype(np.uint8)
    return mask


def rasterize_road(road: dict[str, list[np.ndarray]], grid: BEVGrid, upsample: int, thickness_m: float) -> np.ndarray:
    """{ROAD_CLASSES name: polylines} -> (R, H_r, W_r) float32 {0, 1} target of RoadHead.loss (missing class = empty)."""
    unknown = set(road) - set(ROAD_CLASSES)
    if unknown:
        raise ValueError(f"rasterize_road: unknown road classes {sorted(unknown)}; expected {ROAD_CLASSES}")
    return np.stack([rasterize_polylines(road.get(c, []), grid, upsample, thickness_m) for c in ROAD_CLASSES]).astype(np.float32)


_OFFSETS = ((-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))  # 4-neighbours first
_OFF_I = np.array([o[0] for o in _OFFSETS], dtype=np.int64)
_OFF_J = np.array([o[1] for o in _OFFSETS], dtype=np.int64)
_OFF_NORM = np.hypot(_OFF_I, _OFF_J).astype(np.float64)  # 1 for 4-neighbours, sqrt(2) for diagonals


@njit(cache=True, nogil=True)
def _walk(start, state, pad, off, di, dj, norm, buf):
    """From padded flat index `start`, step to unvisited 8-neighbours (state 1 -> 2) until none is left; the
    pixels go to buf, their count is returned. At a fork with a step behind, the neighbour straightest ahead
    of the heading over the last 3 pixels wins (key -cos of the turn; ties in _OFFSETS order)."""
    n = 0
    p = start
    while True:
        hi, hj = 0, 0
        if n > 0:  # trail = [start] + buf[:n]; heading from trail[-min(len(trail), 4)]
            t = n + 1 - min(n + 1, 4)
            back = start if t == 0 else buf[t - 1]
            hi, hj = p // pad - back // pad, p % pad - back % pad
        best, best_key = -1, 0.0
        for k in range(8):
            if state[p + off[k]] != 1:
                continue
            key = -float(hi * di[k] + hj * dj[k]) / norm[k]
            if best < 0 or key < best_key:
                best, best_key = k, key
        if best < 0:
            return n
        p = p + off[best]
        state[p] = 2
        buf[n] = p
        n += 1


@njit(cache=True, nogil=True)
def _join(end, state, on_path, path_id, off):
    """First 8-neighbour of `end` (in _OFFSETS order) that is visited and not on path `path_id`, else -1."""
    for k in range(8):
        q = end + off[k]
        if state[q] == 2 and on_path[q] != path_id:
            return q
    return -1


@njit(cache=True, nogil=True)
def _trace_kernel(skeleton, di, dj, norm):
    """(H, W) bool skeleton -> (rows (M,), cols (M,), starts (P + 1,)): path p is rows/cols[starts[p]:starts[p+1]]."""
    h, w = skeleton.shape
    pad = w + 2
    state = np.zeros((h + 2) * pad, dtype=np.int8)  # padded raster: 0 no pixel, 1 unvisited, 2 visited
    off = di * pad + dj
    npix = 0
    for i in range(h):
        for j in range(w):
            if skeleton[i, j]:
                state[(i + 1) * pad + j + 1] = 1
                npix += 1
    pix = np.empty(npix, dtype=np.int64)
    key = np.empty(npix, dtype=np.int64)
    m = 0
    for i in range(h):
        for j in range(w):
            if skeleton[i, j]:
                p = (i + 1) * pad + j + 1
                count = 0
                for k in range(8):
                    count += state[p + off[k]] != 0
                pix[m], key[m] = p, (count * h + i) * w + j  # start order: neighbour count, then (i, j)
                m += 1
    pix = pix[np.argsort(key)]
    on_path = np.full(state.shape[0], -1, dtype=np.int64)
    fwd, bwd = np.empty(npix, dtype=np.int64), np.empty(npix, dtype=np.int64)
    tmp = np.empty(npix + 2, dtype=np.int64)
    out = np.empty(3 * npix, dtype=np.int64)  # every pixel once, plus at most two junction joins per path
    starts = np.zeros(npix + 1, dtype=np.int64)
    m, npath = 0, 0
    for s in pix:
        if state[s] == 2:
            continue
        state[s] = 2
        nf = _walk(s, state, pad, off, di, dj, norm, fwd)
        nb = _walk(s, state, pad, off, di, dj, norm, bwd)
        # path = backward reversed + [start] + forward, with tmp[0] kept free for a join at the front
        for k in range(nb):
            tmp[1 + k] = bwd[nb - 1 - k]
        tmp[1 + nb] = s
        for k in range(nf):
            tmp[2 + nb + k] = fwd[k]
        first, last = 1, 2 + nb + nf  # path = tmp[first:last]
        for k in range(first, last):
            on_path[tmp[k]] = npath
        q = _join(tmp[last - 1], state, on_path, npath, off)
        if q >= 0:
            tmp[last] = q
            on_path[q] = npath
            last += 1
        q = _join(tmp[first], state, on_path, npath, off)
        if q >= 0:
            first -= 1
            tmp[first] = q
            on_path[q] = npath
        for k in range(first, last):
            out[m] = tmp[k]
            m += 1
        npath += 1
        starts[npath] = m
    out = out[:m]
    return out // pad - 1, out % pad - 1, starts[: npath + 1]


def _trace(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    skeleton = np.asarray(skeleton)
    if skeleton.ndim != 2:
        raise ValueError(f"trace_skeleton: need a 2-D skeleton, got shape {skeleton.shape}")
    return _trace_kernel(np.ascontiguousarray(skeleton, dtype=np.bool_), _OFF_I, _OFF_J, _OFF_NORM)


def trace_skeleton(skeleton: np.ndarray) -> list[list[tuple[int, int]]]:
    """Boolean (H, W) one-pixel-wide skeleton -> ordered pixel paths covering it.

    Start points are taken in order of their neighbour count (end points first); from each unvisited
    start the path walks both ways to unvisited 8-neighbours (straightest
    first at a fork, else 4-neighbours before diagonals), and each
    end joins a visited neighbour (a junction) so branches stay connected. Linear in the pixel count (numba).
    """
    rows, cols, starts = _trace(skeleton)
    ij = np.stack((rows, cols), axis=1).tolist()
    return [[tuple(p) for p in ij[a:b]] for a, b in zip(starts[:-1].tolist(), starts[1:].tolist())]


@njit(cache=True, nogil=True)
def _lengths_and_smooth(xy, starts, half_window):
    """Per path of the (M, 2) points: polyline length (sequential sum) and the moving average of _smooth
    (the same float operations: a running sum from 0, then (c[k+w+1] - c[k-w]) / (2w + 1))."""
    npath = starts.shape[0] - 1
    length = np.zeros(npath)
    smooth = np.empty_like(xy)
    c = np.empty((xy.shape[0] + 1, 2))
    for p in range(npath):
        a, b = starts[p], starts[p + 1]
        n = b - a
        for k in range(a + 1, b):
            dx, dy = xy[k, 0] - xy[k - 1, 0], xy[k, 1] - xy[k - 1, 1]
            length[p] += np.sqrt(dx * dx + dy * dy)
        c[0, 0], c[0, 1] = 0.0, 0.0
        for k in range(n):
            for d in range(2):
                c[k + 1, d] = xy[a + k, d] if k == 0 else c[k, d] + xy[a + k, d]
        for k in range(n):
            w = min(min(k, n - 1 - k), half_window)
            for d in range(2):
                smooth[a + k, d] = (c[k + w + 1, d] - c[k - w, d]) / (2 * w + 1)
    return length, smooth


def vectorize_mask(prob: np.ndarray, grid: BEVGrid, upsample: int, threshold: float = 0.5,
                   min_length_m: float = 2.0, simplify_m: float = 0.2) -> list[tuple[np.ndarray, float]]:
    """(H_r, W_r) probabilities -> [(polyline (N, 2) ego x, y ordered along the line, score), ...].

    All paths at once: tracing, lengths and smoothing in numba, simplification as one shapely call; a path
    whose length is within rounding of min_length_m is re-measured exactly as vectorize_mask_reference does.
    """
    if prob.shape != raster_shape(grid, upsample):
        raise ValueError(f"vectorize_mask: expected a {raster_shape(grid, upsample)} raster, got {prob.shape}")
    res = grid.resolution / upsample
    rows, cols, starts = _trace(skeletonize(prob > threshold))
    xy = np.stack((grid.x_min + (rows + 0.5) * res, grid.y_min + (cols + 0.5) * res), axis=1)  # (M, 2)
    length, smooth = _lengths_and_smooth(xy, starts, 2)
    counts = np.diff(starts)  # (P,) pixels per path
    near = (counts >= 2) & (np.abs(length - min_length_m) <= 1e-9 * max(1.0, abs(min_length_m)))
    for p in np.nonzero(near)[0].tolist():  # a near tie: the reference's own sum decides
        length[p] = np.linalg.norm(np.diff(xy[starts[p]:starts[p + 1]], axis=0), axis=1).sum()
    keep = (counts >= 2) & (length >= min_length_m)  # (P,)
    if not keep.any():
        return []
    kept = np.nonzero(keep)[0]
    lines = shapely.simplify(shapely.linestrings(smooth[np.repeat(keep, counts)],
                                                 indices=np.repeat(np.arange(len(kept)), counts[kept])),
                             simplify_m, preserve_topology=False)
    coords = shapely.get_coordinates(lines)  # (V, 2) all vertices, line after line
    ends = np.cumsum(shapely.get_num_coordinates(lines)).tolist()
    flat_prob, flat = prob.reshape(-1), rows * prob.shape[1] + cols  # (H_r * W_r,), (M,)
    return [(coords[e0:e1], float(flat_prob[flat[starts[p]:starts[p + 1]]].mean()))
            for p, e0, e1 in zip(kept.tolist(), [0] + ends[:-1], ends)]


def _smooth(xy: np.ndarray, half_window: int = 2) -> np.ndarray:
    """Moving average along an (N, 2) pixel path (window 2k+1, shrinking at the ends; end points kept):
    removes the pixel staircase so simplification recovers straight runs."""
    n = len(xy)
    k = np.arange(n)
    w = np.minimum(np.minimum(k, n - 1 - k), half_window)  # (N,) window half-width, 0 at the ends
    c = np.concatenate((np.zeros((1, 2)), np.cumsum(xy, axis=0)))  # c[m] = sum of xy[:m]
    return (c[k + w + 1] - c[k - w]) / (2 * w + 1)[:, None]


# ---- the previous pure-Python implementation: reference for tests and the benchmark -------------------
def trace_skeleton_reference(skeleton: np.ndarray) -> list[list[tuple[int, int]]]:
    """trace_skeleton as it was, with Python sets (the reference of the tests and the benchmark).

    Boolean (H, W) one-pixel-wide skeleton -> ordered pixel paths covering it. Start points are taken in order of their neighbour count (end points first); from each unvisited
    start the path walks both ways to unvisited 8-neighbours (straightest
    first at a fork, else 4-neighbours before diagonals), and each
    end joins a visited neighbour (a junction) so branches stay connected. Linear in the pixel count.
    """
    pixels = set(zip(*(a.tolist() for a in np.nonzero(skeleton))))
    visited: set[tuple[int, int]] = set()

    def neighbours(p):
        return [(p[0] + di, p[1] + dj) for di, dj in _OFFSETS if (p[0] + di, p[1] + dj) in pixels]

    def walk(p):
        out, trail = [], [p]
        while True:
            free = [n for n in neighbours(p) if n not in visited]
            if not free:
                return out
            if len(free) > 1 and len(trail) > 1:  # at a fork, go straightest (heading over the last 3 pixels)
                back = trail[-min(len(trail), 4)]
                di, dj = p[0] - back[0], p[1] - back[1]
                free.sort(key=lambda n: -(di * (n[0] - p[0]) + dj * (n[1] - p[1])) / math.hypot(n[0] - p[0], n[1] - p[1]))
            nxt = free[0]
            visited.add(nxt)
            out.append(nxt)
            trail.append(nxt)
            p = nxt

    paths = []
    for start in sorted(pixels, key=lambda p: (len(neighbours(p)), p)):
        if start in visited:
            continue
        visited.add(start)
        forward = walk(start)
        backward = walk(start)
        path = backward[::-1] + [start] + forward
        on_path = set(path)
        for at_end in (True, False):
            end = path[-1] if at_end else path[0]
            join = next((n for n in neighbours(end) if n in visited and n not in on_path), None)
            if join is not None:
                if at_end:
                    path.append(join)
                else:
                    path.insert(0, join)
                on_path.add(join)
        paths.append(path)
    return paths


def vectorize_mask_reference(prob: np.ndarray, grid: BEVGrid, upsample: int, threshold: float = 0.5,
                   min_length_m: float = 2.0, simplify_m: float = 0.2) -> list[tuple[np.ndarray, float]]:
    """vectorize_mask as it was, one path at a time (the reference of the tests and the benchmark)."""
    if prob.shape != raster_shape(grid, upsample):
        raise ValueError(f"vectorize_mask: expected a {raster_shape(grid, upsample)} raster, got {prob.shape}")
    res = grid.resolution / upsample
    skeleton = skeletonize(prob > threshold)
    out = []
    for path in trace_skeleton_reference(skeleton):
        ij = np.asarray(path, dtype=np.float64)  # (N, 2)
        xy = np.stack((grid.x_min + (ij[:, 0] + 0.5) * res, grid.y_min + (ij[:, 1] + 0.5) * res), axis=1)
        if len(xy) < 2 or np.linalg.norm(np.diff(xy, axis=0), axis=1).sum() < min_length_m:
            continue
        line = np.asarray(LineString(_smooth(xy)).simplify(simplify_m, preserve_topology=False).coords)
        score = float(prob[ij[:, 0].astype(int), ij[:, 1].astype(int)].mean())
        out.append((line, score))
    return out


def polylines_to_global(polylines: list[np.ndarray], ego_to_global) -> list[np.ndarray]:
    """Ego-frame (N, 2) polylines (on the ground, z = 0) -> global (N, 2) x, y with the ego pose (schema.messages.Pose)."""
    rot = ego_to_global.rotation.rotation_matrix
    t = np.asarray(ego_to_global.translation, dtype=np.float64)
    out = []
    for line in polylines:
        p = np.concatenate((np.asarray(line, dtype=np.float64), np.zeros((len(line), 1))), axis=1)
        out.append((p @ rot.T + t)[:, :2])
    return out


class RoadHead(nn.Module):
    """BEV feature (B, C, H, W) -> per-class line logits (B, R, H*up, W*up): conv, transposed-conv upsampling, 1x1."""

    def __init__(self, in_channels: int, grid: BEVGrid, config: RoadHeadConfig = RoadHeadConfig()):
        super().__init__()
        self.grid, self.config = grid, config
        c, up = config.hidden_channels, config.upsample
        layers: list[nn.Module] = [nn.Conv2d(in_channels, c, 3, padding=1), nn.ReLU(inplace=True)]
        if up > 1:  # output = (H - 1) * up - 2 * (up // 2) + 2 * up = H * up
            layers += [nn.ConvTranspose2d(c, c, 2 * up, stride=up, padding=up // 2), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, len(ROAD_CLASSES), 1)]
        self.net = nn.Sequential(*layers)
        nn.init.constant_(self.net[-1].bias, -2.0)  # start near "no line": lines cover few pixels

    @property
    def out_shape(self) -> tuple[int, int]:
        return raster_shape(self.grid, self.config.upsample)

    def forward(self, bev: Tensor) -> Tensor:
        """bev (B, C, H, W) -> logits (B, len(ROAD_CLASSES), H*up, W*up)."""
        if bev.dim() != 4 or tuple(bev.shape[-2:]) != self.grid.shape:
            raise ValueError(f"RoadHead: expected BEV features (B, C, {self.grid.shape[0]}, {self.grid.shape[1]}), got {tuple(bev.shape)}")
        return self.net(bev)

    def loss(self, logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Per-pixel BCE with line pixels weighted by pos_weight; target (B, R, H_r, W_r) in {0, 1}."""
        if target.shape != logits.shape:
            raise ValueError(f"RoadHead.loss: target {tuple(target.shape)} must match logits {tuple(logits.shape)}")
        pw = logits.new_tensor(self.config.pos_weight)
        return {"road": F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=pw)}

    @torch.no_grad()
    def vectorize_scored(self, logits: Tensor) -> list[dict[str, list[tuple[np.ndarray, float]]]]:
        """Per batch item: {class: [(polyline (N, 2) ego x, y, score), ...]}."""
        cfg = self.config
        prob = torch.sigmoid(logits.float()).cpu().numpy()  # (B, R, H_r, W_r)
        return [
            {name: vectorize_mask(p[k], self.grid, cfg.upsample, cfg.threshold, cfg.min_length_m, cfg.simplify_m)
             for k, name in enumerate(ROAD_CLASSES)}
            for p in prob
        ]

    def vectorize(self, logits: Tensor) -> list[dict[str, list[np.ndarray]]]:
        """Per batch item: {'lane_divider': [(N, 2) ego x, y ordered polylines], 'road_edge': [...]}."""
        return [{k: [line for line, _ in v] for k, v in item.items()} for item in self.vectorize_scored(logits)]
