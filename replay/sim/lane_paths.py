"""Lane and sidewalk paths: the 1-D curves agents move along, with stop lines and crossings.

Each road gives one lane path per direction and lane (offset from its centre line) and one
sidewalk path per side; where another road crosses, a lane gets a stop line and a sidewalk a
crossing stretch, each tied to the nearest intersection (whose signal governs it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from replay.sim.config import WorldConfig
from replay.sim.roads import Intersection, Road, mask_runs, zone_mask


@dataclass
class Path:
    """A 1-D path agents move along (a lane or a sidewalk), with arc length s."""

    road: int
    kind: str  # 'lane' | 'sidewalk'
    points: np.ndarray  # (N, 2)
    heading: np.ndarray  # (N,) unwrapped, in the direction of increasing s
    s: np.ndarray  # (N,)
    length: float
    closed: bool
    ring: float  # length of the 1-D ring agents move on (length + a hidden return stretch if open)
    stops: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,) stop-line s
    stop_inter: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (K,)
    cross_a: np.ndarray = field(default_factory=lambda: np.zeros(0))  # sidewalks: crossing [a, b)
    cross_b: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cross_inter: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    @classmethod
    def from_curve(cls, road: int, kind: str, points: np.ndarray, heading: np.ndarray, closed: bool,
                   hidden: float) -> "Path":
        seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        length = float(s[-1] + (np.linalg.norm(points[0] - points[-1]) if closed else 0.0))
        return cls(road, kind, points, heading, s, length, closed, length if closed else length + hidden)

    def _tables(self):
        """Sample tables, closed curves extended by their first sample at s = length."""
        if getattr(self, "_tab", None) is None:
            base, px, py, th = self.s, self.points[:, 0], self.points[:, 1], self.heading
            if self.closed:
                base = np.append(base, self.length)
                px, py = np.append(px, px[0]), np.append(py, py[0])
                th = np.append(th, th[0] + 2 * np.pi * np.round((th[-1] - th[0]) / (2 * np.pi)))
            kappa = np.diff(th) / np.maximum(np.diff(base), 1e-9)
            self._tab = (base, px, py, th, kappa)
        return self._tab

    def sample(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points (M, 2), headings (M,) and curvature dheading/ds (M,) at s (wrapped if closed)."""
        base, px, py, th, kappa = self._tables()
        if self.closed:
            s = np.mod(s, self.length)
        x, y, h = np.interp(s, base, px), np.interp(s, base, py), np.interp(s, base, th)
        i = np.clip(np.searchsorted(base, s, side="right") - 1, 0, len(base) - 2)
        return np.stack([x, y], axis=1), h, kappa[i]


def nearest_intersection(p: np.ndarray, inters: list[Intersection]) -> int:
    """Index of the intersection whose centre is nearest to the point p (2,)."""
    return int(np.argmin([np.linalg.norm(p - it.center) for it in inters]))


def build_paths(roads: list[Road], inters: list[Intersection],
                cfg: WorldConfig) -> tuple[list[tuple[Path, int, int]], list[Path]]:
    """Lane paths (per road, direction, lane) and sidewalk paths, with stop lines and crossings."""
    return build_lane_paths(roads, inters, cfg), build_sidewalk_paths(roads, inters)


def build_lane_paths(roads: list[Road], inters: list[Intersection], cfg: WorldConfig) -> list[tuple[Path, int, int]]:
    """(path, road index, lane number from the centre) of every lane, with its stop lines in s order."""
    lanes: list[tuple[Path, int, int]] = []
    for road in roads:
        others = [o for o in roads if o.index != road.index]
        for forward in (True, False):
            for i in range(road.lanes_per_dir):
                d = -(i + 0.5) * road.lane_width if forward else (i + 0.5) * road.lane_width
                pts, th = road.offset(d), road.heading.copy()
                if not forward:
                    pts, th = pts[::-1].copy(), th[::-1] + np.pi
                path = Path.from_curve(road.index, "lane", pts, th, road.closed, cfg.hidden_return_m)
                stops, sinter = [], []
                for o in others:
                    for a, _ in mask_runs(zone_mask(pts, o, o.outer + 1.0)):
                        if a > 0:
                            stops.append(path.s[a])
                            sinter.append(nearest_intersection(pts[a], inters))
                order = np.argsort(stops)
                path.stops, path.stop_inter = np.array(stops)[order], np.array(sinter, int)[order]
                lanes.append((path, road.index, i))
    return lanes


def build_sidewalk_paths(roads: list[Road], inters: list[Intersection]) -> list[Path]:
    """One path per road side along the sidewalk's middle, with the stretches that cross other roads."""
    walks: list[Path] = []
    for road in roads:
        others = [o for o in roads if o.index != road.index]
        for side in (-1.0, 1.0):
            d = side * (road.half_width + road.curb_width + road.sidewalk_width / 2)
            pts = road.offset(d)
            path = Path.from_curve(road.index, "sidewalk", pts, road.heading.copy(), road.closed, 0.0)
            ca, cb, ci = [], [], []
            for o in others:
                for a, b in mask_runs(zone_mask(pts, o, o.half_width + o.curb_width)):
                    ca.append(path.s[max(a - 1, 0)])
                    cb.append(path.s[min(b, len(pts) - 1)])
                    ci.append(nearest_intersection(pts[(a + b) // 2], inters))
            path.cross_a, path.cross_b, path.cross_inter = np.array(ca), np.array(cb), np.array(ci, int)
            walks.append(path)
    return walks
