"""The post-processing rules fitted together on one set of boxes: the circle-NMS radii, then the attribute
thresholds, then the still speeds of the boxes the fitted radii keep (each capped by its class's threshold, so a
box named moving keeps its velocity); and their tables as text."""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

from lab.calibration.attributes import fit_moving_speed
from lab.calibration.nms_radius import fit_nms_radii, with_radii
from lab.calibration.still_speed import fit_still_speeds
from lab.devkit import matched_attributes
from schema.attributes import GROUP_OF_CLASS, AttributeConfig
from schema.classes import DETECTION_NAMES


def format_fits(fits) -> str:
    rows = [f"{'group':<12}{'boxes':>7}{'threshold m/s':>15}{'right':>8}   (before: threshold, right)"]
    for f in fits:
        rows.append(f"{f.group:<12}{f.boxes:>7}{f.threshold:>15.2f}{f.accuracy:>8.3f}   "
                    f"({f.previous_threshold:.2f}, {f.previous_accuracy:.3f})")
    return "\n".join(rows)


def format_radius_fits(fits) -> str:
    rows = [f"{'class':<22}{'boxes':>7}{'radius m':>10}{'AP':>8}   (before: radius, AP)"]
    for f in fits:
        rows.append(f"{f.name:<22}{f.boxes:>7}{f.radius:>10.1f}{f.ap:>8.3f}   ({f.previous_radius:.1f}, {f.previous_ap:.3f})")
    return "\n".join(rows)


def format_still_speed_fits(fits) -> str:
    rows = [f"{'class':<22}{'boxes':>7}{'still m/s':>11}{'AVE':>8}   (before: still speed, AVE)"]
    for f in fits:
        rows.append(f"{f.name:<22}{f.boxes:>7}{f.still_speed:>11.2f}{f.vel_err:>8.3f}   "
                    f"({f.previous_still_speed:.2f}, {f.previous_vel_err:.3f})")
    return "\n".join(rows)


@dataclass(frozen=True)
class BoxRules:
    """The circle-NMS radii, attribute thresholds and still speeds fitted on one set of boxes, with their fits."""

    radius_fits: list
    attribute_fits: list
    attributes: AttributeConfig
    still_fits: list
    nms_radius_m: list[float]
    still_speed_mps: list[float]


def fit_box_rules(ev, tokens: list[str], detection, attributes, who: str) -> BoxRules:
    """On a loaded DetectionEval `ev` of boxes with no radius and no still speed: the radii, then the attribute
    thresholds, then the still speeds of the boxes the fitted radii keep, each capped by its class's threshold.
    `detection` and `attributes` hold the weights' current values (kept where a fit has no box to go on)."""
    radius_fits = fit_nms_radii(ev, tokens, detection.nms_radius_m)
    radii = [f.radius for f in radius_fits]
    fits, thresholds = [], {}
    for group, (speeds, gt_attributes) in matched_attributes(ev).items():
        if not len(speeds):
            print(f"{who}: no true positive of group {group!r} on this split; its threshold stays "
                  f"{attributes.threshold(group)}", file=sys.stderr)
            continue
        fit = fit_moving_speed(speeds, gt_attributes, group, previous=attributes.threshold(group))
        fits.append(fit)
        thresholds[f"{group}_moving_mps"] = round(fit.threshold, 3)
    fitted = dataclasses.replace(attributes, **thresholds)
    moving_speed = {name: fitted.threshold(group) for name, group in GROUP_OF_CLASS.items()}  # caps the still speeds
    still_fits = fit_still_speeds(ev, with_radii(ev.pred_boxes, tokens, radii), tokens, detection.still_speed_mps, moving_speed)
    still_speed = dict(zip(DETECTION_NAMES, detection.still_speed_mps)) | {f.name: f.still_speed for f in still_fits}
    return BoxRules(radius_fits, fits, fitted, still_fits, radii, [still_speed[n] for n in DETECTION_NAMES])


def format_rules(rules: BoxRules) -> str:
    return "\n".join([format_radius_fits(rules.radius_fits), format_fits(rules.attribute_fits),
                      format_still_speed_fits(rules.still_fits)])
