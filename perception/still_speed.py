"""Per-class still speeds: a box whose predicted speed is below its class's still speed is reported standing
still (velocity 0); the speeds are fitted per weights file by lab.calibration.still_speed.

A camera model's velocity of a parked car is not zero but noise: on the stage-11 weights the median
predicted speed of matched parked cars was 0.23 m/s, a tenth of them above 0.6 m/s, while moving cars came
out at 6-9 m/s. Half the matched vehicles are parked, so that noise is a large share of mAVE, and the
attribute rule (schema.attributes) already names those boxes parked: a parked box with a velocity
contradicts itself. Below a still speed the velocity is set to 0; how low the noise lies depends on the
weights, so the speed is fitted per weights file (`bevstream calibrate`), on scenes the weights were
trained on, never on the split that is reported. It never exceeds the class's attribute threshold: a box
named moving keeps its velocity. (Uncapped, the fit zeroed pedestrians below 0.5 m/s, which then could
only be named standing, and the held-out mAAE rose from 0.046 to 0.082 for a velocity gain the capped
fit nearly matches.)
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

VELOCITY_COLUMNS = slice(7, 9)  # vx, vy of a (..., 9) box (perception.boxes)


def zero_slow_velocities(boxes: Tensor, labels: Tensor, still_speed_mps: Sequence[float]) -> Tensor:
    """(K, 9) boxes, (K,) class indices -> the boxes with vx, vy set to 0 where the speed is below the class's
    still speed (a copy; the input is left as it is)."""
    still = torch.as_tensor(still_speed_mps, dtype=boxes.dtype, device=boxes.device)  # (C,)
    speed = torch.linalg.vector_norm(boxes[:, VELOCITY_COLUMNS], dim=-1)  # (K,)
    out = boxes.clone()
    out[speed < still[labels], VELOCITY_COLUMNS] = 0.0
    return out
