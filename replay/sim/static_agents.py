"""Where the static objects stand: parked vehicles, work zones, cone groups, barriers and parked bicycles.

Static objects do not affect the moving agents, so they are placed after the traffic's warm-up,
knowing where the ego is at t = 0: first a showcase just ahead of it (a work zone on its side and a
row of big parked vehicles across the road, so every scene shows all ten classes), then every
road side's parking strip and parked bicycles. Every draw comes from the world's one numpy
Generator, in a fixed order.
"""
from __future__ import annotations

import numpy as np

from replay.sim.agent_specs import CLASS_SPECS, EGO_FRONT, StaticAgent, class_color, draw_size
from replay.sim.config import WorldConfig
from replay.sim.lane_paths import Path
from replay.sim.roads import DS, Road, zone_mask


class StaticPlacer:
    """Places the static objects of one world's roads (see `place`), collecting them in `statics`."""

    def __init__(self, roads: list[Road], cfg: WorldConfig):
        self.roads, self.cfg = roads, cfg
        self.statics: list[StaticAgent] = []

    def _static(self, rng, name, center_xy, yaw, attribute, size=None, category=None) -> None:
        """One static object standing on the ground at center_xy (size and category from its class by default)."""
        size = draw_size(rng, name) if size is None else size
        cat = category or CLASS_SPECS[name][0]
        self.statics.append(StaticAgent(name, cat, size, np.array([center_xy[0], center_xy[1], size[2] / 2]),
                                        float(yaw), attribute, class_color(rng, name)))

    def place(self, rng: np.random.Generator, ego_path: Path, ego_road: int, ego_s_front: float) -> list[StaticAgent]:
        """Every static object of the world, given where the ego is at t = 0 (its lane path, road and
        front-bumper arc length): the showcase ahead of it first, then each road side's parking
        strip and parked bicycles."""
        cfg = self.cfg
        reserved = self._showcase(rng, ego_path, ego_road, ego_s_front) if cfg.ego_showcase else []
        for road in self.roads:
            others = [o for o in self.roads if o.index != road.index]
            for side in (-1.0, 1.0):
                if road.parking_width > 0:
                    self._parking_strip(rng, road, side, others, reserved)
                self._sidewalk_bicycles(rng, road, side, others)
        return self.statics

    def _parking_strip(self, rng: np.random.Generator, road: Road, side: float, others: list[Road],
                       reserved: list[tuple[int, float, float, float]]) -> None:
        """Parked vehicles, cone groups and work zones along one side's parking strip, skipping the
        reserved stretches and the intersections."""
        cfg = self.cfg
        parked_names = [k for k, _ in cfg.parked_mix]
        parked_w = np.array([w for _, w in cfg.parked_mix], float)
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

    def _sidewalk_bicycles(self, rng: np.random.Generator, road: Road, side: float, others: list[Road]) -> None:
        """Groups of parked bicycles at the building side of one sidewalk, one chance every 60 m."""
        cfg = self.cfg
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

    def _showcase(self, rng: np.random.Generator, ego_path: Path, ego_road: int,
                  ego_s_front: float) -> list[tuple[int, float, float, float]]:
        """Rare classes parked just ahead of the ego's start, so every scene shows all ten classes.

        A work zone (construction vehicle, cones, barriers) on the ego's side and a parked bus,
        truck, trailer and motorcycle across the road, 25-110 m ahead. Returns the parking
        stretches used: (road, side, s from, s to).
        """
        road = self.roads[ego_road]
        if road.parking_width <= 0:
            return []
        others = [o for o in self.roads if o.index != road.index]
        p_ego, h_ego, _ = ego_path.sample(np.array([ego_s_front - EGO_FRONT]))
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

        reserved += self._showcase_work_zone(rng, road, others, s_ego, ahead, right, free)
        reserved += self._showcase_parked_row(rng, road, s_ego, ahead, -right, free)
        return reserved

    def _showcase_work_zone(self, rng: np.random.Generator, road: Road, others: list[Road], s_ego: float,
                            ahead: float, right: float, free) -> list[tuple[int, float, float, float]]:
        """The work zone on the ego's side (and two parked bicycles by it), nearest free stretch ahead first."""
        offsets = [float(rng.uniform(20, 35)) + d for d in (0.0, -15.0, 15.0, 30.0, -30.0, 45.0, 60.0, 75.0, 90.0)]
        for off in offsets:
            start = s_ego + ahead * off
            start = start if ahead > 0 else start - 26.0
            if road.closed:
                start %= road.length
            if not free(start - 1.0, start + 27.0):
                continue
            n = len(self.statics)
            _, th = road.sample(np.array([start]))
            end = self._work_zone(rng, road, right, start, th[0] if right < 0 else th[0] + np.pi, others)
            if len(self.statics) == n:
                return []
            for j in range(2):  # parked bicycles on the sidewalk by the work zone
                pj, tj = road.sample(np.array([start + 0.8 * j]))
                nj = np.array([-np.sin(tj[0]), np.cos(tj[0])])
                self._static(rng, "bicycle", pj[0] + right * nj * (road.outer - 0.45), tj[0] + right * np.pi / 2,
                             "cycle.without_rider")
            return [(road.index, right, start - 1.0, end)]
        return []

    def _showcase_parked_row(self, rng: np.random.Generator, road: Road, s_ego: float, ahead: float, far: float,
                             free) -> list[tuple[int, float, float, float]]:
        """A bus, truck, trailer and motorcycle parked in a row across the road (side `far`) ahead of the ego."""
        d_park = far * (road.lanes_per_dir * road.lane_width + road.parking_width / 2)
        sizes = [(name, draw_size(rng, name)) for name in ("bus", "truck", "trailer", "motorcycle")]
        total = sum(sz[1] + 2.0 for _, sz in sizes)
        offsets = [float(rng.uniform(20, 35)) + d for d in (0.0, -15.0, 15.0, 30.0, -30.0, 45.0, 60.0, 75.0, 90.0)]
        for off in offsets:
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
            return [(road.index, far, start - 1.0, u + 1.0)]
        return []

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
