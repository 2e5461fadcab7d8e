"""The loop every per-class calibration shares: one class's predicted boxes of each sample, changed by a candidate
value (a circle-NMS radius, a still speed), scored by the devkit against the ground truth; the fits then pick the
best candidate."""
from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

from nuscenes.eval.common.data_classes import EvalBoxes


def class_boxes(pred_boxes, tokens: Sequence[str], name: str, by_score: bool = False) -> dict[str, list]:
    """{sample token: the DetectionBoxes of class `name`} of EvalBoxes `pred_boxes` (by falling score if asked)."""
    out = {t: [b for b in pred_boxes[t] if b.detection_name == name] for t in tokens}
    if by_score:
        out = {t: sorted(boxes, key=lambda b: -b.detection_score) for t, boxes in out.items()}
    return out


def score_candidates(per_sample: Mapping[str, list], candidates: Iterable[float], apply: Callable[[list, float], list],
                     score: Callable[[EvalBoxes], float]) -> dict[float, float]:
    """{candidate: score(EvalBoxes of every sample's boxes after apply(boxes, candidate))}, candidates ascending."""
    out = {}
    for value in sorted(candidates):
        preds = EvalBoxes()
        for token, boxes in per_sample.items():
            preds.add_boxes(token, apply(boxes, value))
        out[value] = score(preds)
    return out
