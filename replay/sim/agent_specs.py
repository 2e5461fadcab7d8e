"""What each kind of agent is: nuScenes category, box size, colour and driving parameters per class.

Shared by the placement of agents (replay.sim.agent_placement), the fixed-step simulation
(replay.sim.traffic), the world's states (replay.sim.world) and the exporter.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
class Body:
    """One annotated box of a moving agent (a truck and its trailer are two bodies of one driver)."""

    name: str  # detection name
    category: str
    size: np.ndarray  # (3,) w, l, h
    color: tuple[int, int, int]
    back: float  # distance from the driver's front bumper back to this box's centre


@dataclass
class StaticAgent:
    """One object that never moves (parked vehicle, cone, barrier, standing worker), in the global frame."""

    name: str
    category: str
    size: np.ndarray
    center: np.ndarray  # (3,)
    yaw: float
    attribute: str
    color: tuple[int, int, int]
