"""Traffic of the simulated world: lane paths, agent placement and a fixed-step simulation.

Vehicles (and the ego) drive along lane paths with the Intelligent Driver Model, stop at red
signals before the crosswalks and turn where their road curves; trucks may tow trailers.
Pedestrians walk along sidewalk paths and cross roads only when the crossed road is red; parked
vehicles, work zones (construction vehicle, cones, barriers) and parked bicycles are static.
The simulation advances in fixed steps from `-warmup_s`; within a step each agent moves with
constant acceleration, so positions, velocities and accelerations agree exactly at any time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from replay.sim.config import WorldConfig
from replay.sim.roads import DS, Intersection, Road, mask_runs, zone_mask


# detection name -> (nuScenes category, mean (w, l, h), relative size spread)
CLASS_SPECS: dict[str, tuple[str, tuple[float, float, float], float]] = {
    "car": ("vehicle.car", (1.95, 4.62, 1.73), 0.08),
    "truck": ("vehicle.truck", (2.52, 6.94, 2.84), 0.12),
    "bus": ("vehicle.bus.rigid", (2.94, 11.19, 3.47), 0.06),
    "trailer": ("vehicle.trailer", (2.90, 12.29, 3.87), 0.08),
    "construction_vehicle": ("vehicle.construction", (2.85, 6.37, 3.19), 0.12),
    "pedestrian": ("human.pedestrian.adult", (0.67, 0.73, 1.77), 0.07),
    "motorcycle": ("vehicle.motorcycle", (0.77, 2.11, 1.47), 0.08),
    "bicycle": ("vehicle.bicycle", (0.60, 1.70, 1.28), 0.07),
    "traffic_cone": ("movable_object.trafficcone", (0.41, 0.41, 1.07), 0.10),
    "barrier": ("movable_object.barrier", (2.53, 0.50, 0.98), 0.06),
}
# IDM parameters per moving class: desired speed range (m/s), max accel, comfortable decel, headway
DRIVE_SPECS: dict[str, tuple[tuple[float, float], float, float, float]] = {
    "car": ((8.0, 13.0), 1.6, 2.0, 1.3),
    "truck": ((7.0, 11.0), 1.0, 1.8, 1.6),
    "bus": ((6.5, 10.0), 0.9, 1.6, 1.6),
    "motorcycle": ((9.0, 13.5), 2.2, 2.4, 1.1),
    "bicycle": ((3.5, 6.0), 0.8, 1.5, 1.2),
}
SPEED_LIMITS = {"car": 13.5, "truck": 11.5, "bus": 10.5, "trailer": 11.5, "motorcycle": 14.0,
                "bicycle": 6.5, "pedestrian": 2.0, "construction_vehicle": 0.0, "traffic_cone": 0.0, "barrier": 0.0}
CAR_PALETTE = np.array([[235, 235, 235], [25, 25, 28], [160, 163, 168], [95, 98, 105], [150, 20, 25],
                        [25, 55, 130], [30, 70, 45], [200, 185, 150], [120, 30, 60], [210, 120, 30]], float)
EGO_FRONT = 3.8  # ego origin (rear axle) to front bumper, metres
EGO_LENGTH = 4.9


def class_color(rng: np.random.Generator, name: str) -> tuple[int, int, int]:
    """A class-typical colour with per-object variation."""
    if name in ("car", "motorcycle"):
        base = CAR_PALETTE[rng.integers(len(CAR_PALETTE))]
    elif name in ("truck", "trailer"):
        base = np.array([[230, 230, 225], [200, 90, 30], [60, 90, 150], [150, 150, 150]], float)[rng.integers(4)]
    elif name == "bus":
        base = np.array([[220, 180, 40], [190, 40, 40], [40, 90, 170], [235, 235, 235]], float)[rng.integers(4)]
    elif name == "construction_vehicle":
        base = np.array([[235, 170, 20], [225, 120, 20]], float)[rng.integers(2)]
    elif name == "traffic_cone":
        base = np.array([245, 100, 20], float)
    elif name == "barrier":
        base = np.array([[235, 235, 230], [220, 60, 40], [240, 200, 40]], float)[rng.integers(3)]
    else:  # pedestrians and riders: clothes
        base = rng.uniform(20, 230, 3)
    return tuple(int(v) for v in np.clip(base + rng.normal(0, 10, 3), 0, 255))


def draw_size(rng: np.random.Generator, name: str) -> np.ndarray:
    _, mean, spread = CLASS_SPECS[name]
    return np.array(mean) * np.clip(1 + rng.normal(0, spread, 3), 0.75, 1.3)


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


def _nearest_inter(p: np.ndarray, inters: list[Intersection]) -> int:
    return int(np.argmin([np.linalg.norm(p - it.center) for it in inters]))


def build_paths(roads: list[Road], inters: list[Intersection], cfg: WorldConfig):
    """Lane paths (per road, direction, lane) and sidewalk paths, with stop lines and crossings."""
    lanes: list[tuple[Path, int, int]] = []  # (path, road index, lane number from the centre)
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
                            sinter.append(_nearest_inter(pts[a], inters))
                order = np.argsort(stops)
                path.stops, path.stop_inter = np.array(stops)[order], np.array(sinter, int)[order]
                lanes.append((path, road.index, i))
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
                    ci.append(_nearest_inter(pts[(a + b) // 2], inters))
            path.cross_a, path.cross_b, path.cross_inter = np.array(ca), np.array(cb), np.array(ci, int)
            walks.append(path)
    return lanes, walks


@dataclass
class Body:
    """One annotated box of a moving agent (a truck and its trailer are two bodies of one driver)."""

    name: str  # detection name
    category: str
    size: np.ndarray  # (3,) w, l, h
    color: tuple[int, int, int]
    back: float  # distance from the driver's front bumper back to this box's centre


@dataclass
class StaticAgent:
    name: str
    category: str
    size: np.ndarray
    center: np.ndarray  # (3,)
    yaw: float
    attribute: str
    color: tuple[int, int, int]


class Traffic:
    """All agents of a world and their fixed-step simulation history."""

    def __init__(self, rng: np.random.Generator, roads: list[Road], inters: list[Intersection], cfg: WorldConfig):
        self.cfg, self.roads, self.inters = cfg, roads, inters
        self.lanes, self.walks = build_paths(roads, inters, cfg)
        self._place_ego_and_drivers(rng)
        self._place_pedestrians(rng)
        # history: one row per step, from t = -warmup
        self.t0 = -cfg.warmup_s
        self.hist_s, self.hist_v, self.hist_a, self.hist_lap = [self.d_s.copy()], [self.d_v.copy()], [], [self.d_lap.copy()]
        self.hist_ps, self.hist_pv, self.hist_pdir = [self.p_s.copy()], [], []
        self._prepare()
        # static objects do not affect the moving ones: place them after the warm-up, knowing where
        # the ego is at t = 0
        self.advance_to(0.0)
        self.statics: list[StaticAgent] = []
        self._place_statics(rng)

    # ---- placement -------------------------------------------------------------------------------
    def _place_ego_and_drivers(self, rng: np.random.Generator) -> None:
        cfg = self.cfg
        loop_lanes = [k for k, (p, r, i) in enumerate(self.lanes) if r == 0 and i == 0]
        ego_lane = loop_lanes[int(rng.integers(len(loop_lanes)))]
        ego_path = self.lanes[ego_lane][0]
        ego_s = float(rng.uniform(0, ego_path.length))
        lane_of, s_front, v0, amax, bcomf, headway, length, bodies, is_ego = [], [], [], [], [], [], [], [], []
        lane_of.append(ego_lane)
        s_front.append(ego_s)
        v0.append(float(rng.uniform(*cfg.ego_desired_speed)))
        amax.append(1.2), bcomf.append(1.8), headway.append(1.5), length.append(EGO_LENGTH)
        bodies.append([])
        is_ego.append(True)
        mix = dict(cfg.moving_mix)
        names, weights = list(mix), np.array(list(mix.values()), float)
        for k, (path, road, i) in enumerate(self.lanes):
            outer = i == self.roads[road].lanes_per_dir - 1
            cursor = float(rng.uniform(0, 20))
            first_rear = cursor
            while True:
                name = names[rng.choice(len(names), p=weights / weights.sum())]
                if name == "bicycle" and not outer:
                    name = "car"
                drive = "truck" if name == "truck_trailer" else name
                body_list = []
                size = draw_size(rng, drive)
                body_list.append(Body(drive, CLASS_SPECS[drive][0], size, class_color(rng, drive), size[1] / 2))
                total = size[1]
                if name == "truck_trailer":
                    ts = draw_size(rng, "trailer")
                    body_list.append(Body("trailer", CLASS_SPECS["trailer"][0], ts, class_color(rng, "trailer"),
                                          total + 0.6 + ts[1] / 2))
                    total += 0.6 + ts[1]
                gap = 4.0 + float(rng.exponential(cfg.vehicle_spacing))
                front = cursor + total
                if front + 6.0 > path.ring + first_rear:
                    break
                # keep the ego's neighbourhood clear at the start
                if not (k == ego_lane and abs(((front - ego_s + path.ring / 2) % path.ring) - path.ring / 2) < 25):
                    spec = DRIVE_SPECS[drive]
                    lane_of.append(k), s_front.append(front % path.ring), length.append(total)
                    v0.append(float(rng.uniform(*spec[0]))), amax.append(spec[1]), bcomf.append(spec[2])
                    headway.append(spec[3]), bodies.append(body_list), is_ego.append(False)
                cursor = front + gap
        self.d_lane = np.array(lane_of)
        self.d_s = np.array(s_front, float)
        self.d_v = 0.8 * np.array(v0)
        self.d_v0, self.d_amax, self.d_b = np.array(v0), np.array(amax), np.array(bcomf)
        self.d_T, self.d_len = np.array(headway), np.array(length)
        self.d_lap = np.zeros(len(s_front), int)
        self.d_bodies = bodies
        self.ego = 0

    def _place_pedestrians(self, rng: np.random.Generator) -> None:
        cfg = self.cfg
        path_of, s, speed, direction, lateral, bodies = [], [], [], [], [], []
        for k, path in enumerate(self.walks):
            n = int(rng.poisson(path.length / cfg.pedestrian_spacing))
            for _ in range(n):
                pos = float(rng.uniform(0, path.length))
                if any(a - 1 <= pos <= b + 1 for a, b in zip(path.cross_a, path.cross_b)):
                    continue
                standing = rng.random() < cfg.standing_fraction
                child = rng.random() < 0.1
                size = draw_size(rng, "pedestrian") * (np.array([0.8, 0.8, 0.72]) if child else 1.0)
                cat = "human.pedestrian.child" if child else "human.pedestrian.adult"
                path_of.append(k), s.append(pos), lateral.append(float(rng.uniform(-0.5, 0.5)))
                speed.append(0.0 if standing else float(rng.uniform(1.0, 1.6)))
                direction.append(float(rng.choice([-1.0, 1.0])))
                bodies.append(Body("pedestrian", cat, size, class_color(rng, "pedestrian"), 0.0))
        self.p_path, self.p_s = np.array(path_of, int), np.array(s, float)
        self.p_speed, self.p_dir, self.p_lat = np.array(speed), np.array(direction), np.array(lateral)
        self.p_bodies = bodies

    def _static(self, rng, name, center_xy, yaw, attribute, size=None, category=None) -> None:
        size = draw_size(rng, name) if size is None else size
        cat = category or CLASS_SPECS[name][0]
        self.statics.append(StaticAgent(name, cat, size, np.array([center_xy[0], center_xy[1], size[2] / 2]),
                                        float(yaw), attribute, class_color(rng, name)))

    def _place_statics(self, rng: np.random.Generator) -> None:
        cfg = self.cfg
        parked_names = [k for k, _ in cfg.parked_mix]
        parked_w = np.array([w for _, w in cfg.parked_mix], float)
        reserved = self._showcase(rng) if cfg.ego_showcase else []
        for road in self.roads:
            others = [o for o in self.roads if o.index != road.index]
            for side in (-1.0, 1.0):
                if road.parking_width > 0:
                    d_park = side * (road.lanes_per_dir * road.lane_width + road.parking_width / 2)
                    s = float(rng.uniform(0, 8))
                    while s < road.length - 20:
                        taken = [b for r, sd, a, b in reserved if r == road.index and sd == side and a <= s < b]
                        if taken:
                            s = taken[0]
                            continue
                        p, th = road.sample(np.array([s]))
                        if any(zone_mask(p, o, o.outer + 8.0)[0] for o in others):
                            s += 4.0
                            continue
                        heading = th[0] if side < 0 else th[0] + np.pi
                        if rng.random() < cfg.work_zone_rate:
                            s = self._work_zone(rng, road, side, s, heading, others)
                            continue
                        if rng.random() < cfg.cone_group_rate:  # a few cones or a barrier blocking a slot
                            nrm = np.array([-np.sin(th[0]), np.cos(th[0])])
                            if rng.random() < 0.5:
                                for j in range(int(rng.integers(1, 4))):
                                    pj, _ = road.sample(np.array([s + 1.5 * j]))
                                    self._static(rng, "traffic_cone", pj[0] + d_park * nrm, th[0], "")
                            else:
                                self._static(rng, "barrier", p[0] + d_park * nrm, th[0], "")
                            s += 5.0
                            continue
                        if rng.random() < cfg.parked_occupancy:
                            name = parked_names[rng.choice(len(parked_names), p=parked_w / parked_w.sum())]
                            size = draw_size(rng, name)
                            pc, tc = road.sample(np.array([s + size[1] / 2]))
                            if any(zone_mask(pc, o, o.outer + 6.0 + size[1] / 2)[0] for o in others):
                                s += 4.0
                                continue
                            nrm = np.array([-np.sin(tc[0]), np.cos(tc[0])])
                            c = pc[0] + d_park * nrm + nrm * (-side) * float(rng.uniform(-0.15, 0.15))
                            yaw = (tc[0] if side < 0 else tc[0] + np.pi) + float(rng.normal(0, 0.03))
                            attr = "cycle.without_rider" if name in ("bicycle", "motorcycle") else "vehicle.parked"
                            self._static(rng, name, c, yaw, attr, size)
                            s += size[1] + float(rng.uniform(0.8, 2.5))
                        else:
                            s += float(rng.uniform(3, 10))
                # parked bicycles at the building side of the sidewalk
                for s in np.arange(float(rng.uniform(0, 60)), road.length, 60.0):
                    if rng.random() > cfg.parked_bicycle_rate:
                        continue
                    p, th = road.sample(np.array([s]))
                    if any(zone_mask(p, o, o.outer + 3.0)[0] for o in others):
                        continue
                    nrm = np.array([-np.sin(th[0]), np.cos(th[0])])
                    for j in range(int(rng.integers(1, 4))):
                        pj, tj = road.sample(np.array([s + 0.8 * j]))
                        nj = np.array([-np.sin(tj[0]), np.cos(tj[0])])
                        c = pj[0] + side * nj * (road.outer - 0.45)
                        self._static(rng, "bicycle", c, tj[0] + side * np.pi / 2, "cycle.without_rider")

    def _showcase(self, rng: np.random.Generator) -> list[tuple[int, float, float, float]]:
        """Rare classes parked just ahead of the ego's start, so every scene shows all ten classes.

        A work zone (construction vehicle, cones, barriers) on the ego's side and a parked bus,
        truck, trailer and motorcycle across the road, 25-110 m ahead. Returns the parking
        stretches used: (road, side, s from, s to).
        """
        path, road_idx, _ = self.lanes[self.d_lane[self.ego]]
        road = self.roads[road_idx]
        if road.parking_width <= 0:
            return []
        others = [o for o in self.roads if o.index != road.index]
        s_front0 = self.drivers_at(0.0)[0][self.ego]  # the ego at t = 0
        p_ego, h_ego, _ = path.sample(np.array([s_front0 - EGO_FRONT]))
        _, i = road.tree.query(p_ego[0])
        s_ego = i * DS
        forward = np.cos(h_ego[0] - road.heading[i]) > 0
        ahead = 1.0 if forward else -1.0
        right = -1.0 if forward else 1.0
        reserved: list[tuple[int, float, float, float]] = []

        def free(a: float, b: float) -> bool:
            if a < 5 or b > road.length - 25:
                return False
            pts, _ = road.sample(np.linspace(a, b, 8))
            return not any(zone_mask(pts, o, o.outer + 8.0).any() for o in others)

        offsets = [float(rng.uniform(20, 35)) + d for d in (0.0, -15.0, 15.0, 30.0, -30.0, 45.0, 60.0, 75.0, 90.0)]
        for off in offsets:  # the work zone on the ego's side, nearest free stretch ahead first
            start = s_ego + ahead * off
            start = start if ahead > 0 else start - 26.0
            if road.closed:
                start %= road.length
            if not free(start - 1.0, start + 27.0):
                continue
            n = len(self.statics)
            _, th = road.sample(np.array([start]))
            end = self._work_zone(rng, road, right, start, th[0] if right < 0 else th[0] + np.pi, others)
            if len(self.statics) > n:
                reserved.append((road.index, right, start - 1.0, end))
                for j in range(2):  # parked bicycles on the sidewalk by the work zone
                    pj, tj = road.sample(np.array([start + 0.8 * j]))
                    nj = np.array([-np.sin(tj[0]), np.cos(tj[0])])
                    self._static(rng, "bicycle", pj[0] + right * nj * (road.outer - 0.45), tj[0] + right * np.pi / 2,
                                 "cycle.without_rider")
                break
        far = -right
        d_park = far * (road.lanes_per_dir * road.lane_width + road.parking_width / 2)
        sizes = [(name, draw_size(rng, name)) for name in ("bus", "truck", "trailer", "motorcycle")]
        total = sum(sz[1] + 2.0 for _, sz in sizes)
        offsets = [float(rng.uniform(20, 35)) + d for d in (0.0, -15.0, 15.0, 30.0, -30.0, 45.0, 60.0, 75.0, 90.0)]
        for off in offsets:  # big parked vehicles across the road
            start = s_ego + ahead * off
            start = start if ahead > 0 else start - total
            if road.closed:
                start %= road.length
            if not free(start - 1.0, start + total + 1.0):
                continue
            u = start
            for name, sz in sizes:
                pc, tc = road.sample(np.array([u + sz[1] / 2]))
                nrm = np.array([-np.sin(tc[0]), np.cos(tc[0])])
                attr = "cycle.without_rider" if name == "motorcycle" else "vehicle.parked"
                self._static(rng, name, pc[0] + d_park * nrm, tc[0] if far < 0 else tc[0] + np.pi, attr, sz)
                u += sz[1] + 2.0
            reserved.append((road.index, far, start - 1.0, u + 1.0))
            break
        return reserved

    def _work_zone(self, rng, road: Road, side: float, s: float, heading: float, others) -> float:
        """A construction vehicle in the parking strip behind cones and barriers; returns the next free s."""
        length = float(rng.uniform(16, 26))
        pe, _ = road.sample(np.array([s + length]))
        if any(zone_mask(pe, o, o.outer + 8.0)[0] for o in others) or s + length > road.length - 5:
            return s + 4.0
        edge = side * (road.lanes_per_dir * road.lane_width + 0.35)
        mid = side * (road.lanes_per_dir * road.lane_width + road.parking_width / 2)
        for u in np.arange(s, s + length, 3.0):  # cones or barriers along the lane edge
            p, th = road.sample(np.array([u]))
            nrm = np.array([-np.sin(th[0]), np.cos(th[0])])
            if rng.random() < 0.6:
                self._static(rng, "traffic_cone", p[0] + edge * nrm, th[0], "")
            else:
                pb, tb = road.sample(np.array([u + 1.4]))
                nb = np.array([-np.sin(tb[0]), np.cos(tb[0])])
                self._static(rng, "barrier", pb[0] + (edge + side * 0.1) * nb, tb[0] + np.pi / 2, "")
        for u in (s - 0.5, s + length + 0.5):  # barriers across the strip at both ends
            p, th = road.sample(np.array([u]))
            nrm = np.array([-np.sin(th[0]), np.cos(th[0])])
            self._static(rng, "barrier", p[0] + mid * nrm, th[0], "")
        size = draw_size(rng, "construction_vehicle")
        p, th = road.sample(np.array([s + length / 2]))
        nrm = np.array([-np.sin(th[0]), np.cos(th[0])])
        self._static(rng, "construction_vehicle", p[0] + mid * nrm + side * 0.2 * nrm,
                     th[0] + float(rng.uniform(-0.2, 0.2)), "vehicle.parked", size)
        if rng.random() < 0.7:  # a worker
            q, tq = road.sample(np.array([s + length / 2 + size[1] / 2 + 1.5]))
            nq = np.array([-np.sin(tq[0]), np.cos(tq[0])])
            self._static(rng, "pedestrian", q[0] + mid * nq, tq[0] + float(rng.uniform(0, 6.28)),
                         "pedestrian.standing", category="human.pedestrian.construction_worker")
        return s + length + 3.0

    # ---- simulation ------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Constant index tables for the vectorised step (agents never change lanes or paths)."""
        order = np.argsort(self.d_lane, kind="stable")
        self._lane_sorted = self.d_lane[order]
        starts = np.searchsorted(self._lane_sorted, self._lane_sorted, side="left")
        ends = np.searchsorted(self._lane_sorted, self._lane_sorted, side="right")
        self._grp_start, self._grp_end = starts, ends
        self._rings = np.array([p.ring for p, _, _ in self.lanes])[self.d_lane]
        # a new life (instance) begins when a driver re-enters an open lane; loops never renew
        self._open = ~np.array([p.closed for p, _, _ in self.lanes])[self.d_lane]
        st_lane, st_s, st_inter, st_road = [], [], [], []
        for k, (path, road, _) in enumerate(self.lanes):
            for stop, it in zip(path.stops, path.stop_inter):
                st_lane.append(k), st_s.append(stop), st_inter.append(it), st_road.append(road)
        self._st_lane, self._st_s = np.array(st_lane, int), np.array(st_s, float)
        self._st_inter, self._st_road = np.array(st_inter, int), np.array(st_road, int)
        cr_path, cr_a, cr_b, cr_inter, cr_road = [], [], [], [], []
        for k, path in enumerate(self.walks):
            for a, b, it in zip(path.cross_a, path.cross_b, path.cross_inter):
                cr_path.append(k), cr_a.append(a), cr_b.append(b), cr_inter.append(it), cr_road.append(path.road)
        self._cr_path, self._cr_a, self._cr_b = np.array(cr_path, int), np.array(cr_a), np.array(cr_b)
        self._cr_inter, self._cr_road = np.array(cr_inter, int), np.array(cr_road, int)
        self._walk_len = np.array([p.length for p in self.walks])
        self._walk_closed = np.array([p.closed for p in self.walks])
        self._inter_off = np.array([it.phase_offset_s for it in self.inters])
        self._inter_major = np.array([it.major for it in self.inters])
        self._lane_road_ego = self.lanes[self.d_lane[self.ego]][1]
        self._ped_block = np.zeros(len(self.inters), bool)

    def _hold_for_ego(self, s: np.ndarray, t: float) -> None:
        """Signal priority for the ego (like a bus-priority signal), so scenes keep moving.

        While the ego is within `ego_signal_hold_m` of a stop line on its road, that road's green
        is held, or if it is red, the other road's green is cut short (through the all-red
        clearance). Pedestrians do not start crossing the ego's road while the ego is within a
        longer distance, so nobody is caught on the crossing when the green returns.
        """
        cfg = self.cfg
        self._ped_block = np.zeros(len(self.inters), bool)
        path, road, _ = self.lanes[self.d_lane[self.ego]]
        if len(path.stops) == 0:
            return
        dist = np.mod(path.stops - s[self.ego] + 40.0, path.ring) - 40.0  # (K,) ahead > 0, inside < 0
        self._ped_block[path.stop_inter[(dist < cfg.ego_signal_hold_m + 300.0) & (dist > -40.0)]] = True
        near = np.unique(path.stop_inter[(dist < cfg.ego_signal_hold_m) & (dist > -40.0)])
        if len(near) == 0:
            return
        green, left = self._green(near, np.full(len(near), road), t)
        hold = near[green & (left < 1.0)]
        self._inter_off[hold] -= cfg.sim_dt  # freeze the phase just before the end of green
        c = cfg.signal_cycle_s
        for it in near[~green]:
            phase = np.mod(t + self._inter_off[it], c)
            target = c - cfg.clearance_s  # the all-red clearance before the major green
            if phase < target and road == self._inter_major[it]:
                self._inter_off[it] += target - phase

    def _green(self, inter: np.ndarray, road: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(green, seconds of green left) per (intersection, road) pair at time t.

        Each intersection cycles: major road green, all-red clearance, minor road green, all-red.
        """
        cfg = self.cfg
        c = cfg.signal_cycle_s
        g, clr = c * cfg.major_green_fraction, cfg.clearance_s
        phase = np.mod(t + self._inter_off[inter], c)
        major = road == self._inter_major[inter]
        green = np.where(major, phase < g, (phase >= g + clr) & (phase < c - clr))
        left = np.where(major, g - phase, c - clr - phase)
        return green, left

    def _step(self, t: float) -> None:
        dt = self.cfg.sim_dt
        s, v = self.hist_s[-1], self.hist_v[-1]
        rings = self._rings
        self._hold_for_ego(s, t)
        # leaders: sort by (lane, s); the leader is the next in the lane, wrapping to the first
        order = np.lexsort((s, self.d_lane))
        pos = np.arange(len(order))
        nxt = np.where(pos + 1 < self._grp_end, pos + 1, self._grp_start)
        lead = np.empty_like(order)
        lead[order] = order[nxt]
        gap = np.mod(s[lead] - self.d_len[lead] - s, rings)
        dv = v - v[lead]
        alone = lead == np.arange(len(s))
        gap = np.where(alone, 1e6, gap)
        dv = np.where(alone, 0.0, dv)
        # red signals: a stationary leader at the stop line, unless too close to stop
        if len(self._st_s):
            green, _ = self._green(self._st_inter, self._st_road, t)
            red = ~green
            same = self.d_lane[:, None] == self._st_lane[None, :]  # (drivers, stops)
            dist = np.mod(self._st_s[None, :] - s[:, None] + 1.0, rings[:, None]) - 1.5
            cand = same & red[None, :] & (dist < 60.0) & (dist > (v * v / 10.0)[:, None] - 0.5)
            dist = np.where(cand, dist, np.inf).min(axis=1)
            stop_now = dist < gap
            gap = np.where(stop_now, np.maximum(dist, 0.01), gap)
            dv = np.where(stop_now, v, dv)
        b, am, T = self.d_b, self.d_amax, self.d_T
        s_star = 2.0 + v * T + v * dv / (2 * np.sqrt(am * b))
        acc = am * (1 - (v / self.d_v0) ** 4 - (np.maximum(s_star, 0) / np.maximum(gap, 0.01)) ** 2)
        acc = np.clip(acc, -9.0, am)
        v_new = np.maximum(v + acc * dt, 0.0)
        a_eff = (v_new - v) / dt
        s_raw = s + v * dt + 0.5 * a_eff * dt * dt
        lap = self.hist_lap[-1] + ((s_raw >= rings) & self._open)
        self.hist_a.append(a_eff)
        self.hist_s.append(np.mod(s_raw, rings))
        self.hist_v.append(v_new)
        self.hist_lap.append(lap)
        # pedestrians: wait at a crossing unless their own road is green long enough to cross
        ps = self.hist_ps[-1]
        self.hist_pdir.append(self.p_dir.copy())
        pv = self.p_speed * self.p_dir
        if len(self._cr_a) and len(ps):
            green, left = self._green(self._cr_inter, self._cr_road, t)
            same = self.p_path[:, None] == self._cr_path[None, :]  # (peds, crossings)
            d = self.p_dir[:, None]
            entry = np.where(d > 0, self._cr_a[None, :], self._cr_b[None, :])
            plen = np.where(self._walk_closed, self._walk_len, 1e9)[self.p_path][:, None]
            dist = np.mod((entry - ps[:, None]) * d, plen)
            sp = np.maximum(self.p_speed, 1e-6)[:, None]
            ok = green[None, :] & (left[None, :] > (self._cr_b - self._cr_a)[None, :] / sp + 1.0)
            ok &= ~self._ped_block[self._cr_inter][None, :] | (self._cr_road == self._lane_road_ego)[None, :]
            wait = (same & (dist <= sp * dt + 0.3) & ~ok).any(axis=1) & (self.p_speed > 0)
            pv = np.where(wait, 0.0, pv)
        s_new = ps + pv * dt
        plen = self._walk_len[self.p_path]
        closed = self._walk_closed[self.p_path]
        turn = ~closed & ((s_new < 0) | (s_new > plen))
        s_new = np.where(closed, np.mod(s_new, plen), np.clip(s_new, 0, plen))
        self.p_dir = np.where(turn, -self.p_dir, self.p_dir)
        self.hist_pv.append(pv)
        self.hist_ps.append(s_new)

    def advance_to(self, t: float) -> int:
        """Simulate until the step after t exists; returns the step index k with t in [t_k, t_k+1]."""
        dt = self.cfg.sim_dt
        k = int(np.floor((t - self.t0) / dt + 1e-9))
        if k < 0:
            raise ValueError(f"time {t} s is before the simulation start {self.t0} s")
        while len(self.hist_s) <= k + 1:
            self._step(self.t0 + (len(self.hist_s) - 1) * dt)
        return k

    def drivers_at(self, t: float):
        """(s_front, v, a, lap) of every driver at t, exact within the step's constant acceleration."""
        k = self.advance_to(t)
        tau = t - (self.t0 + k * self.cfg.sim_dt)
        a = self.hist_a[k]
        rings = self._rings
        s_raw = self.hist_s[k] + self.hist_v[k] * tau + 0.5 * a * tau * tau
        lap = self.hist_lap[k] + ((s_raw >= rings) & self._open)
        return np.mod(s_raw, rings), self.hist_v[k] + a * tau, a, lap

    def walkers_at(self, t: float):
        """(s, signed speed, walking direction +-1) of every pedestrian at t."""
        k = self.advance_to(t)
        tau = t - (self.t0 + k * self.cfg.sim_dt)
        pv = self.hist_pv[k]
        s = self.hist_ps[k] + pv * tau
        return s, pv, self.hist_pdir[k]
