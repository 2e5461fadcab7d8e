"""Procedural static world: a road network (a curved loop crossed by straight roads), its
intersections, lane-divider and road-edge polylines, a top-down material raster for the renderer,
and roadside structures (buildings, poles).

Roads are centerlines sampled every `DS` metres with their heading; lanes, curbs, sidewalks and
markings are lateral offsets of the centerline. The loop is built from a curvature profile
(straights, clothoid-eased corners, gentle S-bends) that is point-symmetric, so it closes exactly.
Everything is drawn from one numpy Generator, so the world is a pure function of the seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from replay.sim.config import WorldConfig


DS = 0.25  # centerline sampling step, metres

# Ground materials of the top-down raster (uint8 values).
GRASS, ROAD, MARK_WHITE, MARK_YELLOW, CURB, SIDEWALK = 0, 1, 2, 3, 4, 5
MATERIAL_SEG = ("background", "road", "lane_marking", "lane_marking", "road_edge", "sidewalk")


@dataclass(frozen=True)
class Polyline:
    """An ordered road polyline in global metres."""

    points: np.ndarray  # (N, 2) global metres, ordered
    kind: str  # 'lane_divider' | 'road_edge'
    dashed: bool = False


@dataclass
class Road:
    """A road centerline with its cross-section; lanes are offsets along the left normal."""

    index: int
    points: np.ndarray  # (N, 2) centerline samples every DS metres
    heading: np.ndarray  # (N,) unwrapped heading of the centerline, radians
    closed: bool  # the loop wraps around; cross roads have two open ends
    lanes_per_dir: int
    lane_width: float
    parking_width: float  # a parking strip between the outer lane and the curb (0 = none)
    curb_width: float
    sidewalk_width: float
    tree: cKDTree = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tree = cKDTree(self.points)

    @property
    def s(self) -> np.ndarray:
        return np.arange(len(self.points)) * DS

    @property
    def length(self) -> float:
        return len(self.points) * DS if self.closed else (len(self.points) - 1) * DS

    @property
    def half_width(self) -> float:
        """Centerline to curb face (edge of the drivable surface)."""
        return self.lanes_per_dir * self.lane_width + self.parking_width

    @property
    def outer(self) -> float:
        """Centerline to the outer edge of the sidewalk."""
        return self.half_width + self.curb_width + self.sidewalk_width

    def normals(self) -> np.ndarray:
        return np.stack([-np.sin(self.heading), np.cos(self.heading)], axis=1)

    def offset(self, d: float) -> np.ndarray:
        """(N, 2) the curve at lateral offset d (left positive)."""
        return self.points + d * self.normals()

    def sample(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centerline points (M, 2) and headings (M,) at arc lengths s (wrapped if closed)."""
        base = self.s
        px, py, th = self.points[:, 0], self.points[:, 1], self.heading
        if self.closed:
            s = np.mod(s, self.length)
            base = np.append(base, self.length)
            px, py = np.append(px, px[0]), np.append(py, py[0])
            th = np.append(th, th[0] + (th[-1] - th[0]) + (th[1] - th[0]))
        x, y, h = np.interp(s, base, px), np.interp(s, base, py), np.interp(s, base, th)
        return np.stack([x, y], axis=1), h


@dataclass(frozen=True)
class Intersection:
    index: int
    center: np.ndarray  # (2,)
    major: int  # road index with the longer green
    minor: int
    phase_offset_s: float


def _integrate(kappa: np.ndarray, start: np.ndarray, heading0: float) -> tuple[np.ndarray, np.ndarray]:
    """Points and headings of a curve with curvature kappa[i] on step i (step DS)."""
    dtheta = kappa * DS
    heading = heading0 + np.concatenate([[0.0], np.cumsum(dtheta)])
    mid = heading[:-1] + 0.5 * dtheta
    steps = np.stack([np.cos(mid), np.sin(mid)], axis=1) * DS
    pts = start + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    return pts, heading


def _loop_curvature(rng: np.random.Generator, cfg: WorldConfig) -> tuple[np.ndarray, dict]:
    """Curvature per DS step of the whole loop, and where its straights are (for cross roads)."""
    n = lambda metres: max(1, int(round(metres / DS)))  # noqa: E731
    sides = [float(rng.uniform(*cfg.loop_side_x)), float(rng.uniform(*cfg.loop_side_y))]
    radius = float(rng.uniform(*cfg.corner_radius))
    ease = float(rng.uniform(12.0, 22.0))
    parts, info, cursor = [], {}, 0
    for i, side in enumerate(sides):
        k = np.zeros(n(side))
        bump_len = float(rng.uniform(12.0, 20.0))
        amp = float(rng.uniform(0.0, cfg.max_bend_curvature)) * rng.choice([-1.0, 1.0])
        start = n(float(rng.uniform(0.03, 0.08)) * side)
        nb = n(bump_len)
        k[start:start + nb] = amp
        k[start + nb:start + 3 * nb] = -amp
        k[start + 3 * nb:start + 4 * nb] = amp
        info[f"side{i}"] = (cursor, cursor + len(k))
        parts.append(k)
        cursor += len(k)
        kc = 1.0 / radius
        arc = max(radius * np.pi / 2 - ease, 5.0)
        corner = np.concatenate([np.linspace(0, kc, n(ease)), np.full(n(arc), kc), np.linspace(kc, 0, n(ease))])
        corner *= (np.pi / 2) / (corner.sum() * DS)  # exactly a quarter turn
        parts.append(corner)
        cursor += len(corner)
    half = np.concatenate(parts)
    return np.concatenate([half, half]), info  # point-symmetric: closes exactly


def mask_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index runs where mask is True (no wrap)."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def build_roads(rng: np.random.Generator, cfg: WorldConfig) -> list[Road]:
    """The loop (index 0) and straight cross roads, shifted so the map starts near cfg.map_margin."""
    kappa, info = _loop_curvature(rng, cfg)
    pts, heading = _integrate(kappa, np.zeros(2), 0.0)
    pts, heading = pts[:-1], heading[:-1]  # the last sample repeats the first
    lanes = cfg.lanes_per_direction
    loop = dict(points=pts, heading=heading, closed=True, lanes_per_dir=lanes)
    specs = [loop]
    # Cross roads: a vertical one through side0 (bottom) and a horizontal one through side1 (right).
    half_n = len(pts) // 2
    for which in range(min(cfg.cross_roads, 2)):
        a, b = info[f"side{which}"]
        i = a + int(rng.uniform(0.42, 0.58) * (b - a))
        p = pts[i]
        axis = 1 - which  # vertical road varies y (axis 1), horizontal varies x (axis 0)
        # the opposite side (point symmetry: index + half) is crossed by the same line
        opp = pts[a + half_n:b + half_n]
        q = opp[np.argmin(np.abs(opp[:, which] - p[which]))]
        lo, hi = sorted([p[axis], q[axis]])
        lo, hi = lo - cfg.cross_road_extension, hi + cfg.cross_road_extension
        m = int(round((hi - lo) / DS)) + 1
        cp = np.empty((m, 2))
        cp[:, axis] = lo + np.arange(m) * DS
        cp[:, which] = p[which]
        h = np.full(m, np.pi / 2 if axis == 1 else 0.0)
        specs.append(dict(points=cp, heading=h, closed=False, lanes_per_dir=int(rng.integers(1, lanes + 1))))
    parking = [cfg.parking_width] + [float(rng.choice([0.0, cfg.parking_width])) for _ in specs[1:]]
    # shift so that every coordinate is positive with a margin
    allp = np.concatenate([s["points"] for s in specs])
    shift = cfg.map_margin - allp.min(axis=0)
    roads = []
    for idx, (spec, pw) in enumerate(zip(specs, parking)):
        roads.append(Road(index=idx, points=spec["points"] + shift, heading=spec["heading"], closed=spec["closed"],
                          lanes_per_dir=spec["lanes_per_dir"], lane_width=cfg.lane_width, parking_width=pw,
                          curb_width=cfg.curb_width, sidewalk_width=cfg.sidewalk_width))
    return roads


def zone_mask(points: np.ndarray, other: Road, dist: float) -> np.ndarray:
    """True where points lie within `dist` of another road's centerline."""
    d, _ = other.tree.query(points, distance_upper_bound=dist + DS)
    return d < dist


def find_intersections(rng: np.random.Generator, roads: list[Road], cfg: WorldConfig) -> list[Intersection]:
    """Crossings of every pair of roads (a pair may cross twice), each with a signal phase."""
    out: list[Intersection] = []
    for a in range(len(roads)):
        for b in range(a + 1, len(roads)):
            inside = zone_mask(roads[a].points, roads[b], roads[b].half_width)
            for s0, s1 in mask_runs(inside):
                c = roads[a].points[s0:s1].mean(axis=0)
                out.append(Intersection(len(out), c, a, b, float(rng.uniform(0, cfg.signal_cycle_s))))
    return out


def _cut_runs(keep: np.ndarray, closed: bool) -> list[np.ndarray]:
    """Index arrays of the contiguous kept runs (a closed curve's run may wrap)."""
    n = len(keep)
    if keep.all():
        idx = np.arange(n)
        return [np.append(idx, 0)] if closed else [idx]
    if closed:
        first_cut = int(np.flatnonzero(~keep)[0])
        order = np.roll(np.arange(n), -first_cut)
        return [order[s:e] for s, e in mask_runs(keep[order])]
    return [np.arange(s, e) for s, e in mask_runs(keep)]


def road_polylines(roads: list[Road], step: float = 2.0) -> tuple[Polyline, ...]:
    """Every lane divider and road edge as polylines, cut where they cross another road."""
    out: list[Polyline] = []
    every = max(1, int(round(step / DS)))
    for road in roads:
        others = [o for o in roads if o.index != road.index]
        marks_zone = np.zeros(len(road.points), bool)
        edge_zone = np.zeros(len(road.points), bool)
        for o in others:
            marks_zone |= zone_mask(road.points, o, o.outer)
            edge_zone |= zone_mask(road.points, o, o.half_width)
        lines: list[tuple[float, str, bool, np.ndarray]] = [(0.0, "lane_divider", False, marks_zone)]
        for side in (-1.0, 1.0):
            for i in range(1, road.lanes_per_dir):
                lines.append((side * i * road.lane_width, "lane_divider", True, marks_zone))
            if road.parking_width > 0:
                lines.append((side * road.lanes_per_dir * road.lane_width, "lane_divider", False, marks_zone))
            lines.append((side * road.half_width, "road_edge", False, edge_zone))
        for d, kind, dashed, zone in lines:
            curve = road.offset(d)
            for run in _cut_runs(~zone, road.closed):
                sel = run[::every]
                if run[-1] != sel[-1]:
                    sel = np.append(sel, run[-1])
                if len(sel) >= 2:
                    out.append(Polyline(curve[sel].astype(np.float64), kind, dashed))
    return tuple(out)


@dataclass
class GroundRaster:
    """Top-down material map of the static ground: value = material code (GRASS, ROAD, ...)."""

    material: np.ndarray  # (H, W) uint8, row = y index, col = x index
    origin: np.ndarray  # (2,) global x, y of pixel (0, 0)'s corner
    resolution: float  # metres per pixel


def build_raster(roads: list[Road], bounds: tuple[float, float, float, float], cfg: WorldConfig) -> GroundRaster:
    """Paint sidewalks+curbs, then road surfaces, then markings/crosswalks of every road (in that order)."""
    res = cfg.raster_resolution
    xmin, ymin, xmax, ymax = bounds
    w, h = int(np.ceil((xmax - xmin) / res)), int(np.ceil((ymax - ymin) / res))
    mat = np.zeros((h, w), np.uint8)
    origin = np.array([xmin, ymin])
    step = 0.7 * res

    def splat(road: Road, dmin: float, dmax: float, fn) -> None:
        """Call fn(s, d) -> material (or 255 = skip) on a dense (along, lateral) grid and paint it."""
        d = np.arange(dmin, dmax, step, dtype=np.float32)
        total = road.length
        chunk = 2000
        for s0 in np.arange(0.0, total, chunk * step):
            s = np.arange(s0, min(s0 + chunk * step, total), step)
            p, th = road.sample(s)
            nx, ny = -np.sin(th), np.cos(th)
            x = (p[:, 0:1] + d[None, :] * nx[:, None] - xmin) / res
            y = (p[:, 1:2] + d[None, :] * ny[:, None] - ymin) / res
            m = fn(s[:, None].astype(np.float32), d[None, :], s)
            m = np.broadcast_to(m, x.shape)
            ok = (m != 255) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
            mat[y[ok].astype(np.int64), x[ok].astype(np.int64)] = m[ok]

    for road in roads:  # pass 1: sidewalks and curbs
        hw, cw = road.half_width, road.curb_width

        def side(sg, dg, s, hw=hw, cw=cw):
            a = np.abs(dg)
            return np.where(a < hw + cw, CURB, SIDEWALK).astype(np.uint8)

        splat(road, -road.outer, -hw, side)
        splat(road, hw, road.outer, side)
    for road in roads:  # pass 2: road surface
        splat(road, -road.half_width, road.half_width, lambda sg, dg, s: np.uint8(ROAD))
    for road in roads:  # pass 3: markings and crosswalks, away from other roads
        others = [o for o in roads if o.index != road.index]
        lw, n, pw, hw = road.lane_width, road.lanes_per_dir, road.parking_width, road.half_width

        def marks(sg, dg, s, road=road, others=others, lw=lw, n=n, pw=pw, hw=hw):
            p, _ = road.sample(s)
            zone = np.zeros(len(s), bool)
            cross = np.zeros(len(s), bool)
            for o in others:
                dist, _ = o.tree.query(p, distance_upper_bound=o.outer + 1.0)
                zone |= dist < o.outer
                cross |= (dist > o.half_width + o.curb_width + 0.3) & (dist < o.outer - 0.3)
            a = np.abs(dg)
            out = np.full(np.broadcast_shapes(sg.shape, dg.shape), 255, np.uint8)
            yellow = (np.abs(a - 0.12) < 0.06)
            dashed = np.zeros_like(yellow)
            for i in range(1, n):
                dashed |= np.abs(a - i * lw) < 0.075
            solid = (np.abs(a - n * lw) < 0.075) if pw > 0 else (np.abs(a - (hw - 0.3)) < 0.075)
            dash_on = np.mod(sg, 9.0) < 3.0
            free = ~zone[:, None]
            out = np.where(free & yellow, MARK_YELLOW, out)
            out = np.where(free & ((dashed & dash_on) | solid), MARK_WHITE, out)
            zebra = cross[:, None] & (a < hw - 0.4) & (np.mod(dg + 100.0, 1.2) < 0.6)
            out = np.where(zebra, MARK_WHITE, out)
            return out

        splat(road, -road.half_width, road.half_width, marks)
    return GroundRaster(mat, origin, res)


def _rect_corners(cx: float, cy: float, length: float, width: float, yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    ax, ay = np.array([c, s]) * length / 2, np.array([-s, c]) * width / 2
    ctr = np.array([cx, cy])
    return np.stack([ctr + ax + ay, ctr + ax - ay, ctr - ax - ay, ctr - ax + ay])


def _rects_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test of two convex quads (4, 2)."""
    for poly in (a, b):
        for i in range(4):
            e = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-e[1], e[0]])
            pa, pb = a @ axis, b @ axis
            if pa.max() < pb.min() or pb.max() < pa.min():
                return False
    return True


@dataclass
class Structures:
    """Static boxes beside the roads (buildings, poles): the renderer's and the lidar's occluders."""

    boxes: np.ndarray  # (M, 7) float64: cx, cy, cz, w, l, h, yaw (l along yaw)
    colors: np.ndarray  # (M, 3) uint8


def place_structures(rng: np.random.Generator, roads: list[Road], cfg: WorldConfig,
                     bounds: tuple[float, float, float, float]) -> Structures:
    """Rows of buildings behind each sidewalk and street poles at the curb, clear of every road."""
    boxes, colors, quads = [], [], []
    xmin, ymin, xmax, ymax = bounds

    def clear(quad: np.ndarray, extra: float) -> bool:
        pts = np.concatenate([quad, quad.mean(axis=0, keepdims=True), (quad + np.roll(quad, 1, axis=0)) / 2])
        if pts[:, 0].min() < xmin or pts[:, 1].min() < ymin or pts[:, 0].max() > xmax or pts[:, 1].max() > ymax:
            return False
        return not any(zone_mask(pts, r, r.outer + extra).any() for r in roads)

    for road in roads:
        for side in (-1.0, 1.0):
            s = float(rng.uniform(0, 10))
            while s < road.length - 10:
                length = float(rng.uniform(10, 30))
                depth = float(rng.uniform(8, 16))
                height = float(rng.uniform(4, 20))
                gap = float(rng.uniform(2, 12))
                if rng.random() < cfg.building_fill:
                    setback = float(rng.uniform(0.5, 4.0))
                    p, th = road.sample(np.array([s + length / 2]))
                    nrm = np.array([-np.sin(th[0]), np.cos(th[0])])
                    c = p[0] + side * nrm * (road.outer + setback + depth / 2)
                    quad = _rect_corners(c[0], c[1], length, depth, th[0])
                    if clear(quad, 0.3) and not any(_rects_overlap(quad, q) for q in quads
                                                    if np.linalg.norm(q[0] - quad[0]) < 80):
                        quads.append(quad)
                        boxes.append([c[0], c[1], height / 2, depth, length, height, th[0]])
                        tone = rng.uniform(0.35, 0.85)
                        tint = rng.uniform(-0.12, 0.12, 3)
                        colors.append(np.clip((tone + tint) * 255, 0, 255))
                s += length + gap
            # poles near the curb
            for sp in np.arange(float(rng.uniform(0, cfg.pole_spacing)), road.length, cfg.pole_spacing):
                p, th = road.sample(np.array([sp]))
                nrm = np.array([-np.sin(th[0]), np.cos(th[0])])
                c = p[0] + side * nrm * (road.half_width + road.curb_width + 0.4)
                others = [o for o in roads if o.index != road.index]
                if any(zone_mask(c[None], o, o.outer + 1.0)[0] for o in others):
                    continue
                boxes.append([c[0], c[1], 3.5, 0.25, 0.25, 7.0, th[0]])
                colors.append(np.array([90.0, 92.0, 95.0]))
    return Structures(np.array(boxes, np.float64).reshape(-1, 7), np.array(colors).astype(np.uint8).reshape(-1, 3))
