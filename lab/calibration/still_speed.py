"""Per-class still speeds (perception.still_speed) fitted on a training split by the devkit's velocity error:
for each class, the candidate that gives the lowest error on the matched boxes, never above the class's
attribute threshold (a box named moving keeps its velocity)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from lab.calibration.per_class import class_boxes, score_candidates
from lab.devkit import class_vel_err, restricted
from schema.classes import DETECTION_NAMES

CANDIDATE_STILL_SPEEDS_MPS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)


@dataclass(frozen=True)
class StillSpeedFit:
    """The fitted still speed of one class: its devkit velocity error (m/s) there and at the weights' speed."""

    name: str
    boxes: int  # predicted boxes of the class
    still_speed: float
    vel_err: float
    previous_still_speed: float
    previous_vel_err: float


def with_still_speed(boxes: Sequence, still_speed: float) -> list:
    """DetectionBoxes -> the same list with a copy at velocity 0 in place of each box slower than `still_speed`."""
    out = []
    for box in boxes:
        if np.hypot(*box.velocity[:2]) < still_speed:
            box = copy.copy(box)
            box.velocity = (0.0, 0.0)
        out.append(box)
    return out


def fit_still_speeds(ev, pred_boxes, tokens: Iterable[str], previous: Sequence[float],
                     moving_speed: Mapping[str, float], candidates: Sequence[float] = CANDIDATE_STILL_SPEEDS_MPS,
                     names: Sequence[str] = DETECTION_NAMES) -> list[StillSpeedFit]:
    """Per class whose velocity the devkit scores: the candidate still speed with the lowest velocity error
    (ties: the lower speed) of `pred_boxes` (EvalBoxes, made with no still speed, NMS as the runtime runs it)
    against a loaded DetectionEval `ev`'s ground truth, restricted to the samples `tokens`.

    A class's still speed is at most its `moving_speed` (the attribute threshold, schema.attributes), so
    only boxes already named parked, standing or riderless are zeroed: the velocity agrees with the attribute,
    and the attribute fit is untouched. Cones and barriers, which have no scored velocity, keep their speed."""
    tokens = list(tokens)
    gt_boxes = restricted(ev.gt_boxes, tokens)
    fits = []
    for k, name in enumerate(names):
        if name not in moving_speed:
            continue
        per_sample = class_boxes(pred_boxes, tokens, name)
        allowed = [c for c in candidates if c <= moving_speed[name]] or [0.0]
        errors = score_candidates(per_sample, set(allowed) | {float(previous[k])}, with_still_speed,
                                  lambda preds: class_vel_err(ev, gt_boxes, preds, name))
        finite = [s for s in sorted(allowed) if np.isfinite(errors[s])]
        best = min(finite, key=lambda s: errors[s]) if finite else float(previous[k])  # no true positive: unchanged
        fits.append(StillSpeedFit(name, sum(len(b) for b in per_sample.values()), best, errors[best], float(previous[k]),
                                  errors[float(previous[k])]))
    return fits
