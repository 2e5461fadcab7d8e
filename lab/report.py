"""The evaluation report: one dict for report.json, and its text for the terminal."""
from __future__ import annotations

from typing import Mapping

from lab.tracking_eval import format_tracking

NOT_AVAILABLE = "not available"


def evaluation_report(detection: dict | None, segmentation: dict | None, road: dict | None, meta: dict) -> dict:
    """The JSON `bevstream eval` writes: each section, or 'not available' with the reason."""
    return {
        "meta": meta,
        "detection": detection if detection is not None else NOT_AVAILABLE,
        "segmentation": segmentation if segmentation is not None else f"{NOT_AVAILABLE} (no label images in this dataroot)",
        "road": road if road is not None else f"{NOT_AVAILABLE} (no road geometry in this dataroot)",
    }


def _binned_lines(by_class: Mapping[str, list[dict]], edges_key: str, title: str, figures) -> list[str]:
    """Report lines of per-class bins (speed_bins, range_bins): the title, then per class its non-empty bins
    as 'lo-hi: boxes: figures(bin)'."""
    lines = []
    for name, bins in by_class.items():
        bins = [b for b in bins if b["boxes"]]
        if bins:
            lines.append(f"    {name}: " + " | ".join(
                f"{b[edges_key][0]:g}-{'' if b[edges_key][1] is None else format(b[edges_key][1], 'g')}: {b['boxes']}: {figures(b)}"
                for b in bins))
    return [f"  {title}"] + lines if lines else []


def format_report(report: dict) -> str:
    """A short human-readable table of the report."""
    lines = []
    det = report["detection"]
    if isinstance(det, dict):
        lines.append("detection (nuScenes DetectionEval, detection_cvpr_2019)")
        lines.append("  " + "  ".join(f"{k} {det[k]:.4f}" for k in ("NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE")))
        lines.append("  AP " + "  ".join(f"{k} {v:.3f}" for k, v in det["per_class_AP"].items()))
        by_distance = {c: aps for c, aps in det.get("AP_per_distance", {}).items() if aps}
        if by_distance:  # a class found but badly placed has its AP at 2-4 m far above its AP at 0.5-1 m
            dists = "/".join(f"{float(d):g}" for d in next(iter(by_distance.values())))
            lines.append(f"  AP at match distance {dists} m: " + "  ".join(
                f"{c} " + "/".join(f"{v:.2f}" for v in aps.values()) for c, aps in by_distance.items()))
        lines += _binned_lines(det.get("velocity_by_speed", {}), "gt_speed_mps",
                               "velocity of true positives by true speed (boxes: mean true -> predicted speed, mean error; m/s)",
                               lambda b: f"{b['gt_speed_mean']:.2f} -> {b['pred_speed_mean']:.2f}, {b['error_mean']:.2f}")
        lines += _binned_lines(det.get("translation_by_range", {}), "range_m",
                               "placement of true positives by range (boxes: mean error, |along the ray|, |across|, bias along; m)",
                               lambda b: f"{b['error_mean']:.2f}, {b['along_abs_mean']:.2f}, {b['across_abs_mean']:.2f}, {b['along_mean']:+.2f}")
        speeds = report.get("meta", {}).get("attributes")
        if speeds:
            lines.append("  attributes: moving above " + ", ".join(f"{k.removesuffix('_moving_mps')} {v:g} m/s" for k, v in speeds.items()))
        radii = {k: v for k, v in report.get("meta", {}).get("nms_radius_m", {}).items() if v > 0}
        if radii:
            lines.append("  NMS also drops a box within " + ", ".join(f"{k} {v:g}" for k, v in radii.items())
                         + " m of a better one of its class")
        still = {k: v for k, v in report.get("meta", {}).get("still_speed_mps", {}).items() if v > 0}
        if still:
            lines.append("  velocity 0 below " + ", ".join(f"{k} {v:g}" for k, v in still.items()) + " m/s")
    else:
        lines.append(f"detection: {det}")
    seg = report["segmentation"]
    if isinstance(seg, dict):
        lines.append("segmentation  " + "  ".join(f"{k} {seg[k]:.4f}" for k in ("PA", "MPA", "mIoU", "FWIoU")))
        lines.append("  IoU " + "  ".join(f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in seg["per_class_IoU"].items()))
    else:
        lines.append(f"segmentation: {seg}")
    road = report["road"]
    if isinstance(road, dict):
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append("road  IoU " + "  ".join(f"{k} {fmt(v)}" for k, v in road["IoU"].items()))
        if "chamfer_AP" in road:
            for c, aps in road["chamfer_AP"].items():
                lines.append(f"  Chamfer AP {c}: " + "  ".join(f"@{t}m {fmt(v)}" for t, v in aps.items()))
            lines.append(f"  Chamfer mAP {fmt(road['chamfer_mAP'])}")
        if "window" in road:
            w = road["window"]
            lines.append(f"  within |x| <= {w['half_extent_m']['x']:g} m, |y| <= {w['half_extent_m']['y']:g} m (MapTR's window): Chamfer mAP "
                         f"{fmt(w['chamfer_mAP'])} (" + "  ".join(f"{c} {fmt(v)}" for c, v in w["chamfer_AP_class_mean"].items()) + ")")
        if "line_outcomes" in road:
            lo = road["line_outcomes"]
            for c in road["IoU"]:
                lines.append(f"  ground-truth {c} lines @{lo['threshold_m']}m: " + "  ".join(
                    f"{k} {fmt(lo[c][k])}" for k in ("matched", "traced", "missed")) + f" of {lo[c]['lines']}")
    else:
        lines.append(f"road: {road}")
    if "tracking" in report:
        lines += format_tracking(report["tracking"])
    return "\n".join(lines)


STREAMING_FIGURES = ("NDS", "mAP", "mATE", "mAVE")


def format_streaming(report: dict) -> str:
    """The table of `score_streaming`: offline and streaming columns side by side, with the age of the outputs
    each scored (p50, p99) and the samples that had no output yet."""
    columns = report["streaming"]
    names = list(columns)
    width = max(12, *(len(n) + 2 for n in names))
    head = f"{'':<16}" + "".join(f"{n:>{width}}" for n in names)
    lines = [f"streaming evaluation (SPUR: each sample scored with the newest output delivered by its time) of "
             f"{report['meta']['run']}", head]
    for figure in STREAMING_FIGURES:
        lines.append(f"{figure:<16}" + "".join(f"{c['detection'][figure]:>{width}.4f}" for c in columns.values()))
    for p in ("p50", "p99"):
        lines.append(f"{'age ' + p + ' (ms)':<16}" + "".join(
            f"{c['age_ms'].get(p, float('nan')):>{width}.1f}" for c in columns.values()))
    lines.append(f"{'empty samples':<16}" + "".join(f"{c.get('empty_samples', 0):>{width}d}" for c in columns.values()))
    lines += [f"{n}: {c['note']}" for n, c in columns.items() if "passed over" in c.get("note", "")]
    return "\n".join(lines)
