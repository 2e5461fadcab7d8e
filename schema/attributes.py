"""nuScenes attributes from predicted speed, with per-group speed thresholds fitted on training data.

The model predicts no attribute; like CenterPoint, the submission names a box 'moving' above a speed
and 'parked' / 'standing' / 'without rider' at or below it. CenterPoint's 0.2 m/s suits lidar
velocities; a camera model's velocity noise (about 1 m/s for cars here) pushes most parked cars above
it, and mAAE counted them wrong. So the threshold of each group is a property of the weights:
`lab.calibration.attributes.fit_moving_speed` picks the one that names the most matched training boxes right, and
`bevstream calibrate` stores it in the weights file's model config (`model.attributes`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# group -> (its detection classes, attribute above the threshold, attribute at or below it)
ATTRIBUTE_GROUPS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "vehicle": (("car", "truck", "bus", "trailer", "construction_vehicle"), "vehicle.moving", "vehicle.parked"),
    "pedestrian": (("pedestrian",), "pedestrian.moving", "pedestrian.standing"),
    "cycle": (("bicycle", "motorcycle"), "cycle.with_rider", "cycle.without_rider"),
}
GROUP_OF_CLASS: dict[str, str] = {name: group for group, (names, _, _) in ATTRIBUTE_GROUPS.items() for name in names}


@dataclass(frozen=True)
class AttributeConfig:
    """Speed (m/s) above which a box of each group is named moving. Defaults: CenterPoint's 0.2 m/s."""

    vehicle_moving_mps: float = 0.2
    pedestrian_moving_mps: float = 0.2
    cycle_moving_mps: float = 0.2

    def __post_init__(self) -> None:
        for group in ATTRIBUTE_GROUPS:
            v = self.threshold(group)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"AttributeConfig.{group}_moving_mps must be a finite speed >= 0, got {v}")

    def threshold(self, group: str) -> float:
        return getattr(self, f"{group}_moving_mps")


def attribute_name(name: str, speed: float, config: AttributeConfig = AttributeConfig()) -> str:
    """The submission attribute of a box of class `name` moving at `speed` m/s ('' for classes without)."""
    group = GROUP_OF_CLASS.get(name)
    if group is None:
        return ""
    _, moving, still = ATTRIBUTE_GROUPS[group]
    return moving if speed > config.threshold(group) else still


def attribute_names(names, velocities: np.ndarray, config: AttributeConfig = AttributeConfig()) -> tuple[str, ...]:
    """attribute_name of every box: names (N,), velocities (N, 2) m/s."""
    speeds = np.hypot(*np.asarray(velocities, dtype=np.float64).reshape(-1, 2).T)  # (N,)
    return tuple(attribute_name(n, float(s), config) for n, s in zip(names, speeds))


__all__ = ["ATTRIBUTE_GROUPS", "GROUP_OF_CLASS", "AttributeConfig", "attribute_name", "attribute_names"]
