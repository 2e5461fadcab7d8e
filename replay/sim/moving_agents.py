"""Where the moving agents start: the ego and the drivers on the lanes, the pedestrians on the sidewalks.

Drivers (cars, trucks with or without a trailer, buses, motorcycles, bicycles on the outer lane)
are laid out lane by lane, front to back with random gaps, keeping the ego's start clear;
pedestrians are scattered along the sidewalks away from the crossings, some of them standing.
Every draw comes from the world's one numpy Generator, in a fixed order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replay.sim.agent_specs import CLASS_SPECS, DRIVE_SPECS, EGO_LENGTH, Body, class_color, draw_size
from replay.sim.config import WorldConfig
from replay.sim.lane_paths import Path
from replay.sim.roads import Road

EGO = 0  # the ego is driver 0


@dataclass
class Drivers:
    """Every driver (the ego first) with its lane, start and Intelligent Driver Model parameters, (D,) each."""

    lane: np.ndarray  # index into the lane paths
    s: np.ndarray  # arc length of the front bumper on its lane
    v: np.ndarray  # start speed, m/s
    v0: np.ndarray  # desired speed
    amax: np.ndarray  # max acceleration
    b: np.ndarray  # comfortable deceleration
    T: np.ndarray  # time headway, s
    length: np.ndarray  # bumper to bumper, trailer included
    bodies: list[list[Body]]  # the annotated boxes of each driver (none for the ego)


@dataclass
class Pedestrians:
    """Every pedestrian with its sidewalk path, position, speed, walking direction and lateral offset, (P,) each."""

    path: np.ndarray
    s: np.ndarray
    speed: np.ndarray  # 0 for standing pedestrians
    direction: np.ndarray  # +1 along the path, -1 against it
    lateral: np.ndarray  # offset from the sidewalk's middle, m
    bodies: list[Body]


class _DriverRows:
    """The drivers' columns, appended one driver at a time."""

    def __init__(self):
        self.lane, self.s, self.v0, self.amax, self.b, self.T, self.length, self.bodies = [], [], [], [], [], [], [], []

    def add(self, lane: int, s: float, v0: float, amax: float, b: float, T: float, length: float,
            bodies: list[Body]) -> None:
        self.lane.append(lane), self.s.append(s), self.v0.append(v0), self.amax.append(amax)
        self.b.append(b), self.T.append(T), self.length.append(length), self.bodies.append(bodies)


def place_drivers(rng: np.random.Generator, lanes: list[tuple[Path, int, int]], roads: list[Road],
                  cfg: WorldConfig) -> Drivers:
    """The ego on an inner lane of the loop road (road 0), then every lane filled with drivers."""
    loop_lanes = [k for k, (p, r, i) in enumerate(lanes) if r == 0 and i == 0]
    ego_lane = loop_lanes[int(rng.integers(len(loop_lanes)))]
    ego_path = lanes[ego_lane][0]
    ego_s = float(rng.uniform(0, ego_path.length))
    rows = _DriverRows()
    rows.add(ego_lane, ego_s, float(rng.uniform(*cfg.ego_desired_speed)), 1.2, 1.8, 1.5, EGO_LENGTH, [])
    mix = dict(cfg.moving_mix)
    names, weights = list(mix), np.array(list(mix.values()), float)
    for k, (path, road, i) in enumerate(lanes):
        outer = i == roads[road].lanes_per_dir - 1
        _fill_lane(rng, rows, k, path, outer, names, weights, cfg, ego_s if k == ego_lane else None)
    v0 = np.array(rows.v0)
    return Drivers(lane=np.array(rows.lane), s=np.array(rows.s, float), v=0.8 * np.array(rows.v0), v0=v0,
                   amax=np.array(rows.amax), b=np.array(rows.b), T=np.array(rows.T), length=np.array(rows.length),
                   bodies=rows.bodies)


def _fill_lane(rng: np.random.Generator, rows: _DriverRows, k: int, path: Path, outer: bool, names: list[str],
               weights: np.ndarray, cfg: WorldConfig, ego_s: float | None) -> None:
    """Drivers along lane k, back to front with random gaps, until the ring is full; none within 25 m
    of the ego's start (ego_s, when the ego drives on this lane)."""
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
        if not (ego_s is not None and abs(((front - ego_s + path.ring / 2) % path.ring) - path.ring / 2) < 25):
            spec = DRIVE_SPECS[drive]
            rows.add(k, front % path.ring, float(rng.uniform(*spec[0])), spec[1], spec[2], spec[3], total, body_list)
        cursor = front + gap


def place_pedestrians(rng: np.random.Generator, walks: list[Path], cfg: WorldConfig) -> Pedestrians:
    """A Poisson number of pedestrians per sidewalk path, none starting on a crossing."""
    path_of, s, speed, direction, lateral, bodies = [], [], [], [], [], []
    for k, path in enumerate(walks):
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
    return Pedestrians(path=np.array(path_of, int), s=np.array(s, float), speed=np.array(speed),
                       direction=np.array(direction), lateral=np.array(lateral), bodies=bodies)
