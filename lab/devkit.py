"""The devkit's DetectionEval on a submission file (config 'detection_cvpr_2019'), and the diagnostics read
from a loaded evaluation: matched boxes, attributes, velocity error by speed, translation error by range."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from replay.nuscenes.submission import read_submission, split_sample_tokens, write_submission
from schema.attributes import GROUP_OF_CLASS
from schema.classes import DETECTION_NAMES

if TYPE_CHECKING:
    from nuscenes.nuscenes import NuScenes


DETECTION_CONFIG = "detection_cvpr_2019"


def eval_set_name(version: str, split: str) -> str:
    """The devkit's split name for a version: ('v1.0-mini', 'val') -> 'mini_val'; names already
    in the devkit's form ('mini_val', 'train_detect', ...) pass through."""
    from nuscenes.utils.splits import create_splits_scenes

    known = create_splits_scenes()
    if version == "v1.0-mini" and split in ("train", "val"):
        split = f"mini_{split}"
    if split not in known:
        raise ValueError(f"unknown split {split!r} for {version}; the devkit knows {sorted(known)}")
    return split


def complete_results(nusc: "NuScenes", results: Mapping[str, list[dict]], eval_set: str) -> dict[str, list[dict]]:
    """Results restricted to the split's samples, with an empty list for every sample without boxes.

    DetectionEval requires the predicted sample tokens to equal the split's exactly.
    """
    tokens = split_sample_tokens(nusc, eval_set)
    if not tokens:
        raise ValueError(f"{nusc.dataroot} ({nusc.version}) has no sample in split {eval_set!r}")
    return {t: list(results.get(t, [])) for t in tokens}


def detection_summary(metrics_dict: dict) -> dict:
    """The headline figures of DetectionMetrics.serialize(): NDS, mAP, mATE..mAAE, per-class AP and TP errors."""
    tp = metrics_dict["tp_errors"]
    return {
        "NDS": metrics_dict["nd_score"],
        "mAP": metrics_dict["mean_ap"],
        "mATE": tp["trans_err"],
        "mASE": tp["scale_err"],
        "mAOE": tp["orient_err"],
        "mAVE": tp["vel_err"],
        "mAAE": tp["attr_err"],
        "per_class_AP": {name: metrics_dict["mean_dist_aps"][name] for name in DETECTION_NAMES},
        "per_class_tp_errors": {name: metrics_dict["label_tp_errors"][name] for name in DETECTION_NAMES},
        "AP_per_distance": {name: metrics_dict["label_aps"][name] for name in DETECTION_NAMES},
    }


def empty_detection_summary() -> dict:
    """The scores of a results file without a single box (what DetectionEval would give if it ran)."""
    return {
        "NDS": 0.0, "mAP": 0.0, "mATE": 1.0, "mASE": 1.0, "mAOE": 1.0, "mAVE": 1.0, "mAAE": 1.0,
        "per_class_AP": {name: 0.0 for name in DETECTION_NAMES},
        "per_class_tp_errors": {name: {} for name in DETECTION_NAMES},
        "AP_per_distance": {name: {} for name in DETECTION_NAMES},
        "velocity_by_speed": {name: speed_bins(np.zeros((0, 2)), np.zeros((0, 2))) for name in VELOCITY_CLASSES},
        "translation_by_range": {name: range_bins(np.zeros((0, 2)), np.zeros((0, 2))) for name in DETECTION_NAMES},
        "note": "no predicted box in the results: DetectionEval not run (the devkit fails on empty results); worst scores",
    }


def devkit_config(name: str, max_range: float | None = None):
    """The devkit's evaluation config `name` (detection or tracking); max_range caps every class's range."""
    from nuscenes.eval.common.config import config_factory

    config = config_factory(name)
    if max_range is not None:
        config.class_range = {cls: min(r, max_range) for cls, r in config.class_range.items()}
    return config


def detection_config(max_range: float | None = None):
    """The devkit's detection_cvpr_2019 config; max_range caps every class's evaluation range."""
    return devkit_config(DETECTION_CONFIG, max_range)


def run_detection_eval(
    nusc: "NuScenes",
    results_path: str | Path,
    eval_set: str,
    output_dir: str | Path | None = None,
    verbose: bool = False,
    max_range: float | None = None,
) -> dict:
    """Score a submission file with the devkit's DetectionEval; returns detection_summary(...) plus
    'num_samples', and writes the devkit's metrics (metrics_details.json, metrics_summary.json) to output_dir.
    max_range caps every class's evaluation range (the devkit filters both boxes and ground truth by it)."""
    from nuscenes.eval.detection.evaluate import DetectionEval

    with open(results_path) as f:
        num_boxes = sum(len(v) for v in json.load(f).get("results", {}).values())
    if num_boxes == 0:
        # The devkit cannot score an empty results file (its class-field lookup fails on no box);
        # with no prediction every metric is at its worst by definition: AP 0, TP errors 1, NDS 0.
        return empty_detection_summary()

    tmp = None
    if output_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bevstream-deteval-")
        output_dir = tmp.name
    config = detection_config(max_range)
    try:
        evaluator = DetectionEval(
            nusc, config=config, result_path=str(results_path), eval_set=eval_set,
            output_dir=str(output_dir), verbose=verbose,
        )
        metrics, md_list = evaluator.evaluate()
        serialized = metrics.serialize()
        with open(Path(output_dir) / "metrics_summary.json", "w") as f:
            json.dump(serialized, f, indent=2)
        with open(Path(output_dir) / "metrics_details.json", "w") as f:
            json.dump(md_list.serialize(), f)
        summary = detection_summary(serialized)
        summary["num_samples"] = len(evaluator.sample_tokens)
        true_positives = {name: match_true_positives(evaluator, name) for name in DETECTION_NAMES}
        summary["velocity_by_speed"] = velocity_by_speed(true_positives)
        summary["translation_by_range"] = translation_by_range(true_positives)
        return summary
    finally:
        if tmp is not None:
            tmp.cleanup()


def evaluate_results_file(
    nusc: "NuScenes", results_path: str | Path, eval_set: str, output_dir: str | Path, verbose: bool = False,
    max_range: float | None = None,
) -> dict:
    """Score a results file that may lack samples of the split: completes it first (empty lists), then DetectionEval."""
    results, meta = read_submission(results_path)
    complete = complete_results(nusc, results, eval_set)
    missing = sum(1 for t in complete if t not in results)
    extra = sum(1 for t in results if t not in complete)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = results_path
    if missing or extra:
        path = write_submission(out / "results_nusc_split.json", complete, meta)
    summary = run_detection_eval(nusc, path, eval_set, out, verbose=verbose, max_range=max_range)
    summary["samples_without_predictions"] = missing
    summary["samples_outside_split_dropped"] = extra
    return summary


def match_true_positives(ev, name: str, dist_th: float = 2.0) -> list[tuple[Any, Any]]:
    """(prediction, ground truth) EvalBox pairs of class `name` in a loaded DetectionEval `ev`, matched as
    the devkit's `accumulate` does: predictions by falling score, each to the nearest unmatched ground
    truth of its sample within `dist_th` metres centre distance (2 m: where the devkit takes its TP errors)."""
    preds = sorted((b for b in ev.pred_boxes.all if b.detection_name == name), key=lambda b: -b.detection_score)
    candidates: dict[str, tuple[list[int], np.ndarray, np.ndarray]] = {}  # sample -> gt indices, (G, 2) xy, (G,) taken
    pairs = []
    for pred in preds:
        token = pred.sample_token
        if token not in candidates:
            idx = [i for i, gt in enumerate(ev.gt_boxes[token]) if gt.detection_name == name]
            xy = np.array([ev.gt_boxes[token][i].translation[:2] for i in idx], dtype=np.float64).reshape(-1, 2)
            candidates[token] = (idx, xy, np.zeros(len(idx), dtype=bool))
        idx, xy, taken = candidates[token]
        if not idx:
            continue
        dist = np.where(taken, np.inf, np.linalg.norm(xy - np.asarray(pred.translation[:2]), axis=1))  # (G,)
        best = int(np.argmin(dist))  # the first nearest, as accumulate's strict '<' keeps
        if dist[best] < dist_th:
            taken[best] = True
            pairs.append((pred, ev.gt_boxes[token][idx[best]]))
    return pairs


def loaded_detection_eval(nusc: "NuScenes", results_path: str | Path, eval_set: str, max_range: float | None = None):
    """A DetectionEval with the boxes loaded and filtered (nothing scored yet); the results file may lack samples."""
    from nuscenes.eval.detection.evaluate import DetectionEval


    results, meta = read_submission(results_path)
    with tempfile.TemporaryDirectory(prefix="bevstream-match-") as tmp:
        path = write_submission(Path(tmp) / "results.json", complete_results(nusc, results, eval_set), meta)
        return DetectionEval(nusc, config=detection_config(max_range), result_path=str(path), eval_set=eval_set,
                             output_dir=tmp, verbose=False)


def detection_metrics(ev, results: Mapping[str, list[dict]], tokens: Sequence[str]):
    """The devkit's DetectionMetrics of submission boxes `results` (sample token -> boxes) against a loaded
    DetectionEval `ev`'s ground truth on the samples `tokens`: the boxes loaded and filtered as DetectionEval
    loads a results file, without writing one (a calibration scores many)."""
    import copy

    from nuscenes.eval.common.data_classes import EvalBoxes
    from nuscenes.eval.common.loaders import add_center_dist, filter_eval_boxes
    from nuscenes.eval.detection.data_classes import DetectionBox

    tokens = list(tokens)
    preds = EvalBoxes.deserialize({t: list(results.get(t, ())) for t in tokens}, DetectionBox)
    scored = copy.copy(ev)  # the loaded ground truth is shared, not copied; `ev` keeps its own boxes
    scored.pred_boxes = filter_eval_boxes(ev.nusc, add_center_dist(ev.nusc, preds), ev.cfg.class_range)
    scored.gt_boxes, scored.sample_tokens = restricted(ev.gt_boxes, tokens), tokens
    metrics, _ = scored.evaluate()
    return metrics


def matched_attributes(ev, dist_th: float = 2.0) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Per attribute group (schema.attributes): the predicted speed (N,) and the ground-truth attribute
    of every true positive of a loaded DetectionEval `ev` (loaded_detection_eval; match_true_positives)."""
    out: dict[str, tuple[list[float], list[str]]] = {}
    for name, group in GROUP_OF_CLASS.items():
        speeds, gt_attributes = out.setdefault(group, ([], []))
        for pred, gt in match_true_positives(ev, name, dist_th):
            speeds.append(float(np.hypot(*pred.velocity[:2])))
            gt_attributes.append(gt.attribute_name)
    return {group: (np.asarray(v, dtype=np.float64), a) for group, (v, a) in out.items()}


SPEED_BIN_EDGES_MPS: tuple[float, ...] = (0.0, 0.5, 3.0, 6.0, 10.0, math.inf)
# the classes whose velocity the devkit scores (it gives cones and barriers none)
VELOCITY_CLASSES: tuple[str, ...] = tuple(n for n in DETECTION_NAMES if n not in ("traffic_cone", "barrier"))


def speed_bins(gt_velocity: np.ndarray, pred_velocity: np.ndarray, edges: Sequence[float] = SPEED_BIN_EDGES_MPS) -> list[dict]:
    """Velocity error by true speed: gt_velocity, pred_velocity (N, 2) m/s of matched boxes -> one entry per
    bin [lo, hi) of |gt| with the boxes, their mean true and predicted speed and mean L2 error (the devkit's
    AVE per box). Boxes whose ground-truth velocity is unknown (NaN) are left out, as the devkit does."""
    gt, pred = np.asarray(gt_velocity, np.float64).reshape(-1, 2), np.asarray(pred_velocity, np.float64).reshape(-1, 2)
    known = np.isfinite(gt).all(axis=1)
    gt, pred = gt[known], pred[known]
    gt_speed, pred_speed = np.linalg.norm(gt, axis=1), np.linalg.norm(pred, axis=1)  # (N,)
    error = np.linalg.norm(gt - pred, axis=1)  # (N,)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (gt_speed >= lo) & (gt_speed < hi)
        n = int(m.sum())
        mean = (lambda v: float(v[m].mean())) if n else (lambda v: None)
        bins.append({"gt_speed_mps": [lo, None if math.isinf(hi) else hi], "boxes": n,
                     "gt_speed_mean": mean(gt_speed), "pred_speed_mean": mean(pred_speed), "error_mean": mean(error)})
    return bins


def velocity_by_speed(true_positives: Mapping[str, list[tuple[Any, Any]]],
                      edges: Sequence[float] = SPEED_BIN_EDGES_MPS) -> dict[str, list[dict]]:
    """Per class with a velocity (not cones or barriers): speed_bins of its true positives (class ->
    match_true_positives). Shows where mAVE comes from, e.g. speeds pulled toward a typical value."""
    out = {}
    for name in VELOCITY_CLASSES:
        pairs = true_positives[name]
        gt = np.array([gt.velocity for _, gt in pairs], dtype=np.float64).reshape(-1, 2)
        pred = np.array([pred.velocity for pred, _ in pairs], dtype=np.float64).reshape(-1, 2)
        out[name] = speed_bins(gt, pred, edges)
    return out


RANGE_BIN_EDGES_M: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0, 40.0, math.inf)


def range_bins(gt_offset: np.ndarray, pred_offset: np.ndarray, edges: Sequence[float] = RANGE_BIN_EDGES_M) -> list[dict]:
    """Placement error by range: gt_offset, pred_offset (N, 2) metres of matched boxes' centres from the ego
    (BEV) -> one entry per bin [lo, hi) of the ground truth's range with the boxes, their mean error (the
    devkit's ATE per box), and that error split along the ray from the ego (mean signed: + placed too far;
    mean absolute) and across it (mean absolute). Depth from cameras fails along the ray, and more with range."""
    gt, pred = np.asarray(gt_offset, np.float64).reshape(-1, 2), np.asarray(pred_offset, np.float64).reshape(-1, 2)
    rng = np.linalg.norm(gt, axis=1)  # (N,)
    ray = gt / np.maximum(rng, 1e-9)[:, None]  # (N, 2) unit vectors from the ego
    err = pred - gt  # (N, 2)
    along = (err * ray).sum(axis=1)  # (N,)
    across = ray[:, 0] * err[:, 1] - ray[:, 1] * err[:, 0]  # (N,)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (rng >= lo) & (rng < hi)
        n = int(m.sum())
        mean = (lambda v: float(v[m].mean())) if n else (lambda v: None)
        bins.append({"range_m": [lo, None if math.isinf(hi) else hi], "boxes": n, "error_mean": mean(np.hypot(*err.T)),
                     "along_mean": mean(along), "along_abs_mean": mean(np.abs(along)), "across_abs_mean": mean(np.abs(across))})
    return bins


def translation_by_range(true_positives: Mapping[str, list[tuple[Any, Any]]],
                         edges: Sequence[float] = RANGE_BIN_EDGES_M) -> dict[str, list[dict]]:
    """Per class: range_bins of its true positives (class -> match_true_positives; the devkit stores each
    box's offset from the ego as ego_translation). Shows whether a class is missed far away or found and misplaced."""
    out = {}
    for name, pairs in true_positives.items():
        gt = np.array([gt.ego_translation[:2] for _, gt in pairs], dtype=np.float64).reshape(-1, 2)
        pred = np.array([pred.ego_translation[:2] for pred, _ in pairs], dtype=np.float64).reshape(-1, 2)
        out[name] = range_bins(gt, pred, edges)
    return out


# ---- per-class scores of a loaded evaluation (what the calibration fits optimise) -------------------------


def restricted(boxes, tokens: Iterable[str]):
    """EvalBoxes holding only the given samples (a calibration run covers some scenes of a split)."""
    from nuscenes.eval.common.data_classes import EvalBoxes

    out = EvalBoxes()
    for token in tokens:
        out.add_boxes(token, boxes[token])
    return out


def class_ap(ev, gt_boxes, pred_boxes, name: str) -> float:
    """The devkit's AP of one class, averaged over the config's matching thresholds (as mAP averages it)."""
    from nuscenes.eval.detection.algo import accumulate, calc_ap

    cfg = ev.cfg
    return float(np.mean([calc_ap(accumulate(gt_boxes, pred_boxes, name, cfg.dist_fcn_callable, th), cfg.min_recall,
                                  cfg.min_precision) for th in cfg.dist_ths]))


def class_vel_err(ev, gt_boxes, pred_boxes, name: str) -> float:
    """The devkit's velocity error (AVE) of one class: true positives at the config's TP distance, averaged
    over the recall range above min_recall, as DetectionEval reports it."""
    from nuscenes.eval.detection.algo import accumulate, calc_tp

    cfg = ev.cfg
    return float(calc_tp(accumulate(gt_boxes, pred_boxes, name, cfg.dist_fcn_callable, cfg.dist_th_tp), cfg.min_recall,
                         "vel_err"))
