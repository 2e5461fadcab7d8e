"""Per-class circle-NMS radii (perception.nms), fitted on a training split: for each class, the candidate
radius under which the class's devkit AP (mean over the 0.5/1/2/4 m matching thresholds) is highest.

A camera model places a small object's duplicates one anchor cell (1.6 m) apart, where two pedestrian or
cone boxes barely overlap, so the IoU rule keeps them and each duplicate is a false positive. How far apart
the duplicates land depends on the weights, so the radius is fitted per weights file, as the attribute
thresholds are (`bevstream calibrate`), never on the split that is reported.

The predictions are the weights' submission with no radius; a candidate is applied to them afterwards with
the NMS the runtime runs (perception.nms.batched_nms_bev, the IoU rule already applied). The runtime applies
both rules in one pass, which differs only where an IoU-suppressed box would have been the one to suppress
another by distance.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from pyquaternion import Quaternion

from lab.calibration.per_class import class_boxes, score_candidates
from lab.devkit import class_ap, restricted
from perception.nms import batched_nms_bev
from schema.classes import DETECTION_NAMES

CANDIDATE_RADII_M: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


@dataclass(frozen=True)
class RadiusFit:
    """The fitted radius of one class: its AP there and at the radius the weights had."""

    name: str
    boxes: int  # predicted boxes of the class before the circle rule
    radius: float
    ap: float
    previous_radius: float
    previous_ap: float


def circle_suppressed(boxes: Sequence, radius: float) -> list:
    """DetectionBoxes of one class and sample -> those the circle rule of `radius` keeps, by falling score."""
    if not boxes or radius <= 0:
        return list(boxes)
    yaw = [Quaternion(b.rotation).yaw_pitch_roll[0] for b in boxes]
    seven = torch.tensor([[*b.translation, *b.size, y] for b, y in zip(boxes, yaw)], dtype=torch.float64)  # (N, 7)
    scores = torch.tensor([b.detection_score for b in boxes], dtype=torch.float64)
    labels = torch.zeros(len(boxes), dtype=torch.int64)
    keep = batched_nms_bev(seven, scores, labels, 1.0, radii=[radius])  # IoU never exceeds 1: the circle rule only
    return [boxes[i] for i in keep.tolist()]


def with_radii(pred_boxes, tokens: Iterable[str], radii: Sequence[float], names: Sequence[str] = DETECTION_NAMES):
    """EvalBoxes of the samples `tokens`, each class thinned by the circle rule of its radius (names order)."""
    from nuscenes.eval.common.data_classes import EvalBoxes

    out = EvalBoxes()
    for token in tokens:
        kept = []
        for name, radius in zip(names, radii):
            boxes = sorted((b for b in pred_boxes[token] if b.detection_name == name), key=lambda b: -b.detection_score)
            kept += circle_suppressed(boxes, radius)
        out.add_boxes(token, kept)
    return out


def fit_nms_radii(ev, tokens: Iterable[str], previous: Sequence[float], candidates: Sequence[float] = CANDIDATE_RADII_M,
                  names: Sequence[str] = DETECTION_NAMES) -> list[RadiusFit]:
    """Per class of a loaded DetectionEval `ev` (predictions made with no radius), restricted to the samples
    `tokens`: the candidate radius with the highest class AP (ties: the smaller radius)."""
    tokens = list(tokens)
    gt_boxes = restricted(ev.gt_boxes, tokens)
    fits = []
    for k, name in enumerate(names):
        per_sample = class_boxes(ev.pred_boxes, tokens, name, by_score=True)
        aps = score_candidates(per_sample, set(candidates) | {float(previous[k])}, circle_suppressed,
                               lambda preds: class_ap(ev, gt_boxes, preds, name))
        best = max(sorted(aps), key=lambda r: aps[r])  # the first (smallest) of equal APs
        fits.append(RadiusFit(name, sum(len(b) for b in per_sample.values()), best, aps[best], float(previous[k]),
                              aps[float(previous[k])]))
    return fits
