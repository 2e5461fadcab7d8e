"""Evaluation glue: the devkit's DetectionEval on a submission file, and per-frame accumulation of the
segmentation and road-geometry metrics (perception/metrics.py) over a whole split.

Detection is scored only by the devkit (`DetectionEval`, config 'detection_cvpr_2019'), from a
results file in the official submission format (replay/submission.py). Segmentation and road
metrics accumulate sufficient statistics frame by frame (a confusion matrix; intersections and
unions; all polylines with their frame), so the result over N frames equals the metric computed on
the N frames concatenated.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from perception.attributes import AttributeConfig, attribute_name
from perception.classes import DETECTION_NAMES, ROAD_CLASSES, SEG_CLASSES

if TYPE_CHECKING:
    from nuscenes.nuscenes import NuScenes

DETECTION_CONFIG = "detection_cvpr_2019"
CHAMFER_THRESHOLDS: tuple[float, ...] = (0.5, 1.0, 1.5)
MAPTR_WINDOW_M: tuple[float, float] = (30.0, 15.0)  # MapTR's perception range: +-30 m along x (forward), +-15 m across
IGNORE_INDEX = 255
NOT_AVAILABLE = "not available"


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
    from replay.submission import split_sample_tokens

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
    from replay.submission import read_submission, write_submission

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

    from replay.submission import read_submission, write_submission

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

    from perception.nms_radius import restricted

    tokens = list(tokens)
    preds = EvalBoxes.deserialize({t: list(results.get(t, ())) for t in tokens}, DetectionBox)
    scored = copy.copy(ev)  # the loaded ground truth is shared, not copied; `ev` keeps its own boxes
    scored.pred_boxes = filter_eval_boxes(ev.nusc, add_center_dist(ev.nusc, preds), ev.cfg.class_range)
    scored.gt_boxes, scored.sample_tokens = restricted(ev.gt_boxes, tokens), tokens
    metrics, _ = scored.evaluate()
    return metrics


def matched_attributes(ev, dist_th: float = 2.0) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Per attribute group (perception.attributes): the predicted speed (N,) and the ground-truth attribute
    of every true positive of a loaded DetectionEval `ev` (loaded_detection_eval; match_true_positives)."""
    from perception.attributes import GROUP_OF_CLASS

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


# ---- segmentation and road accumulation ---------------------------------------------------------------


class SegmentationAccumulator:
    """Confusion matrix summed over frames and cameras; scores by perception.metrics.segmentation_scores."""

    def __init__(self, num_classes: int = len(SEG_CLASSES), ignore_index: int = IGNORE_INDEX, class_names: Sequence[str] = SEG_CLASSES):
        import torch

        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.images = 0

    def update(self, pred, target) -> None:
        """pred, target: integer label maps of the same shape, (H, W) or (N, H, W); target may hold ignore_index."""
        from perception.metrics import confusion_matrix

        self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.images += 1 if getattr(pred, "ndim", 2) == 2 else int(pred.shape[0])

    def result(self) -> dict | None:
        """PA, MPA, mIoU, FWIoU and per-class IoU (None for a class absent from labels and predictions); None without labels."""
        from perception.metrics import segmentation_scores

        if int(self.confusion.sum()) == 0:
            return None
        s = segmentation_scores(self.confusion)
        iou = [None if math.isnan(v) else float(v) for v in s["iou"].tolist()]
        return {
            "PA": s["PA"], "MPA": s["MPA"], "mIoU": s["mIoU"], "FWIoU": s["FWIoU"],
            "per_class_IoU": dict(zip(self.class_names, iou)),
            "images": self.images,
            "labelled_pixels": int(self.confusion.sum()),
        }


class RoadAccumulator:
    """BEV road-mask IoU (intersections and unions summed over frames) and MapTR Chamfer AP over all frames:
    over the whole BEV grid, and over MapTR's smaller perception window (`window` half extents x, y in
    metres; lines clipped to it, as MapTR's ground truth is) so the figure compares with published ones."""

    def __init__(self, classes: Sequence[str] = ROAD_CLASSES, thresholds: Sequence[float] = CHAMFER_THRESHOLDS,
                 window: tuple[float, float] | None = MAPTR_WINDOW_M):
        self.classes = tuple(classes)
        self.thresholds = tuple(thresholds)
        self.window = window
        self.intersection = np.zeros(len(self.classes), dtype=np.int64)
        self.union = np.zeros(len(self.classes), dtype=np.int64)
        self.pred_lines: list[dict] = []
        self.gt_lines: list[dict] = []

    def update(self, pred_mask, gt_mask, pred_polylines: Mapping[str, list] | None, gt_polylines: Mapping[str, list] | None) -> None:
        """pred_mask, gt_mask: (R, H_r, W_r) binary; polylines {class: [(line (N, 2), score)]} and {class: [line (M, 2)]}."""
        import torch

        p = torch.as_tensor(np.asarray(pred_mask)).bool()
        g = torch.as_tensor(np.asarray(gt_mask)).bool()
        if p.shape != g.shape or p.shape[0] != len(self.classes):
            raise ValueError(f"RoadAccumulator: masks {tuple(p.shape)} / {tuple(g.shape)}, expected ({len(self.classes)}, H, W) each")
        self.intersection += (p & g).flatten(1).sum(1).numpy()
        self.union += (p | g).flatten(1).sum(1).numpy()
        if pred_polylines is not None and gt_polylines is not None:
            self.pred_lines.append({c: list(pred_polylines.get(c, [])) for c in self.classes})
            self.gt_lines.append({c: list(gt_polylines.get(c, [])) for c in self.classes})

    @property
    def frames(self) -> int:
        return len(self.gt_lines)

    def iou(self) -> dict[str, float | None]:
        return {c: (float(i / u) if u > 0 else None) for c, i, u in zip(self.classes, self.intersection, self.union)}

    def result(self) -> dict | None:
        from perception.metrics import clip_to_window, line_outcomes

        if self.frames == 0 and int(self.union.sum()) == 0:
            return None
        iou = self.iou()
        valid = [v for v in iou.values() if v is not None]
        out: dict[str, Any] = {"IoU": iou, "mIoU": float(np.mean(valid)) if valid else None, "frames": self.frames}
        if self.frames:
            out.update(self._chamfer(self.pred_lines, self.gt_lines))
            # Why lines are missed, at the middle threshold: not drawn at all, or drawn as other instances.
            t = self.thresholds[len(self.thresholds) // 2]
            outcomes = line_outcomes(self.pred_lines, self.gt_lines, t, self.classes)
            out["line_outcomes"] = {"threshold_m": t}
            for c, o in outcomes.items():
                out["line_outcomes"][c] = {k: v if k == "lines" else _none_if_nan(v) for k, v in o.items()}
            if self.window is not None:
                hx, hy = self.window
                preds = [{c: [(piece, s) for line, s in f[c] for piece in clip_to_window(line, hx, hy)] for c in self.classes}
                         for f in self.pred_lines]
                gts = [{c: [piece for line in f[c] for piece in clip_to_window(line, hx, hy)] for c in self.classes}
                       for f in self.gt_lines]
                out["window"] = {"half_extent_m": {"x": hx, "y": hy}, **self._chamfer(preds, gts)}
        return out

    def _chamfer(self, preds: list[dict], gts: list[dict]) -> dict:
        from perception.metrics import chamfer_ap

        ap = chamfer_ap(preds, gts, self.thresholds, self.classes)
        return {"chamfer_AP": {c: {str(t): _none_if_nan(v) for t, v in ap["ap"][c].items()} for c in self.classes},
                "chamfer_AP_class_mean": {c: _none_if_nan(v) for c, v in ap["class_ap"].items()},
                "chamfer_mAP": _none_if_nan(ap["mAP"])}


def _none_if_nan(v) -> float | None:
    """JSON-friendly: NaN (a class without ground truth) -> None."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# ---- running a model over a split -----------------------------------------------------------------------


def submission_entries(dets, sample_token: str, ego_to_global, max_boxes: int = 500,
                       attributes: AttributeConfig = AttributeConfig()) -> list[dict]:
    """Ego-frame perception.structures.Detections of a keyframe -> official submission boxes (global frame),
    attributes named from speed by the model's thresholds (perception.attributes)."""
    from replay.submission import detection_entry

    order = np.argsort(-dets.scores.detach().cpu().numpy(), kind="stable")[:max_boxes]
    boxes = dets.to_global(ego_to_global)
    out = []
    for box in (boxes[i] for i in order):
        speed = float(np.hypot(*box["velocity"][:2]))
        out.append(detection_entry(sample_token, box["translation"], np.maximum(box["size"], 1e-3), box["rotation"],
                                   box["velocity"], box["detection_name"], box["detection_score"],
                                   attribute_name(box["detection_name"], speed, attributes)))
    return out


@dataclass
class ModelRun:
    """What one pass of a model over a split collected."""

    results: dict[str, list[dict]] = field(default_factory=dict)  # sample token -> submission boxes
    tracks: dict[str, list[dict]] | None = None  # sample token -> tracking submission boxes; None: no tracker
    segmentation: SegmentationAccumulator = field(default_factory=SegmentationAccumulator)
    road: RoadAccumulator = field(default_factory=RoadAccumulator)
    frames: int = 0
    keyframes: int = 0
    wall_s: float = 0.0


def run_model(model, source, gt_reader, progress: bool = True, max_boxes: int = 500, reset_every: int | None = None,
              record_ticks: list | None = None) -> ModelRun:
    """Stream every frame set of `source` through `model` (state reset at each new scene, so sweeps warm
    the temporal state); the model's tracker (if on) sees every frame's boxes; at keyframes collect detections,
    segmentation and road metrics.
    `reset_every` N starts every N-th frame from a fresh state: N = 1 shows what the history contributes.
    `record_ticks`, with the tracker on: each frame's boxes as they reach it are appended
    (perception.track_fit.TickBoxes), for fitting its levels."""
    import time

    import torch

    from perception.batching import frame_set_inputs, rectify_label
    from perception.rectify import Rectifier
    from perception.road import rasterize_road
    from perception.track_fit import RecordingFilter
    from perception.tracking_eval import ids_by_score, tracking_entries
    from runtime.messages import CAMERA_CHANNELS

    rect = Rectifier(model.config.rectify)
    road_cfg = model.road_head.config
    grid = model.config.grid
    run = ModelRun()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(source), desc="eval", unit="frame", dynamic_ncols=True)
    t0 = time.perf_counter()
    state = None
    tracker = model.new_tracker()  # fed every frame, as the runtime's BEV stage feeds it
    if tracker is not None:
        run.tracks = {}
    segment = -1  # counts fresh starts of the tracker: its ids restart at each (tracking_entries' prefix)
    model.eval()
    with torch.no_grad():
        for fs in source.frame_sets():
            x = frame_set_inputs(fs, rect)
            reset = reset_every is not None and run.frames % reset_every == 0
            if reset:
                state = None
            out, state = model(x, state)
            run.frames += 1
            if bar is not None:
                bar.update(1)
            filters = None
            if tracker is not None:
                segment += bool(reset or fs.new_scene)
                filters = [tracker.track_filter(fs.ego_to_global.matrix, fs.timestamp_us / 1e6, new_scene=reset or fs.new_scene)]
            if filters is not None and record_ticks is not None:
                filters = [RecordingFilter(filters[0], reset or fs.new_scene, fs.ego_to_global,
                                           fs.sample_token if fs.is_keyframe else None, record_ticks)]
            if not fs.is_keyframe:
                if filters is not None:
                    model.detection_head.decode(out.detection, track_filters=filters)
                continue
            run.keyframes += 1
            post = model.postprocess(out, track_filters=filters)[0]
            run.results[fs.sample_token] = submission_entries(post["detections"], fs.sample_token, fs.ego_to_global,
                                                              max_boxes, model.config.attributes)
            if filters is not None:
                ids = ids_by_score(post["detections"].scores.numpy(), filters[0].track_ids)
                run.tracks[fs.sample_token] = tracking_entries(run.results[fs.sample_token], ids, f"{segment}-")
            gt = gt_reader.for_frame_set(fs)
            for cam, label in zip(fs.cameras, gt.seg_labels):
                if label is None:
                    continue
                target = rectify_label(rect, cam.channel, label, cam.intrinsic, cam.sensor_to_ego.matrix)
                run.segmentation.update(post["seg"][CAMERA_CHANNELS.index(cam.channel)].long(), target)
            if gt.road is not None:
                prob = torch.sigmoid(out.road_logits[0].float())
                gt_mask = rasterize_road(gt.road, grid, road_cfg.upsample, road_cfg.thickness_m)
                run.road.update((prob > road_cfg.threshold).numpy(), gt_mask > 0.5,
                                model.road_head.vectorize_scored(out.road_logits)[0], gt.road)
    if bar is not None:
        bar.close()
    run.wall_s = time.perf_counter() - t0
    return run


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
        from perception.tracking_eval import format_tracking

        lines += format_tracking(report["tracking"])
    return "\n".join(lines)
