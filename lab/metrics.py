"""Metrics: segmentation scores from a confusion matrix (lecture Part 3), road-mask IoU, and the MapTR
Chamfer-distance AP of vectorised road polylines (and what became of each ground-truth line).

Confusion matrix convention (the lecture's p_ij): rows = ground-truth class i, columns = predicted class j.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
import torch
from shapely.geometry import LineString, MultiLineString, box
from torch import Tensor

from schema.classes import ROAD_CLASSES


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = None) -> Tensor:
    """Integer label maps of equal shape -> (K, K) int64 counts p_ij of pixels of class i predicted as j."""
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    if pred.shape != target.shape:
        raise ValueError(f"confusion_matrix: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    p, t = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    if p.numel() and (min(int(p.min()), int(t.min())) < 0 or max(int(p.max()), int(t.max())) >= num_classes):
        raise ValueError(f"confusion_matrix: labels must lie in 0..{num_classes - 1}")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_scores(conf: Tensor) -> dict[str, float | Tensor]:
    """PA, MPA, mIoU, FWIoU and per-class IoU from a (K, K) confusion matrix, the lecture's formulas:

    PA = sum_i p_ii / sum_ij p_ij;  MPA = mean_i p_ii / sum_j p_ij;
    IoU_i = p_ii / (sum_j p_ij + sum_j p_ji - p_ii);  mIoU = mean_i IoU_i;
    FWIoU = 1 / sum_ij p_ij * sum_i (sum_j p_ij) IoU_i.
    A class absent from both target and prediction has an undefined (NaN) IoU and accuracy and is left out
    of the means (the formulas assume every class occurs).
    """
    conf = torch.as_tensor(conf).double()
    if conf.dim() != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"segmentation_scores: need a square (K, K) matrix, got {tuple(conf.shape)}")
    total = conf.sum()
    if total == 0:
        raise ValueError("segmentation_scores: empty confusion matrix")
    diag = conf.diagonal()
    rows, cols = conf.sum(1), conf.sum(0)  # ground-truth and predicted pixels per class
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    acc = torch.where(rows > 0, diag / rows.clamp(min=1), nan)
    union = rows + cols - diag
    iou = torch.where(union > 0, diag / union.clamp(min=1), nan)
    return {
        "PA": float(diag.sum() / total),
        "MPA": float(acc.nanmean()),
        "mIoU": float(iou.nanmean()),
        "FWIoU": float((rows * torch.nan_to_num(iou)).sum() / total),
        "iou": iou,
        "accuracy": acc,
    }


def road_iou(pred_mask: Tensor, gt_mask: Tensor) -> Tensor:
    """IoU of binary masks per road class: (R, H, W) or (B, R, H, W) -> (R,) (counts summed over the batch);
    (H, W) -> scalar. NaN where both masks are empty."""
    pred, gt = torch.as_tensor(pred_mask).bool(), torch.as_tensor(gt_mask).bool()
    if pred.shape != gt.shape:
        raise ValueError(f"road_iou: pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ in shape")
    if pred.dim() not in (2, 3, 4):
        raise ValueError(f"road_iou: expected (H, W), (R, H, W) or (B, R, H, W), got {tuple(pred.shape)}")
    dims = (-2, -1) if pred.dim() < 4 else (0, -2, -1)
    inter = (pred & gt).sum(dims).double()
    union = (pred | gt).sum(dims).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.tensor(float("nan"), dtype=torch.float64))


def resample_polyline(line: np.ndarray, num_points: int = 100) -> np.ndarray:
    """(N, 2) polyline -> (num_points, 2) points evenly spaced along its length (MapTR's fixed_num sampling)."""
    line = np.asarray(line, dtype=np.float64)
    if line.ndim != 2 or line.shape[1] != 2 or len(line) == 0:
        raise ValueError(f"resample_polyline: need a non-empty (N, 2) polyline, got shape {line.shape}")
    if len(line) == 1:
        return np.repeat(line, num_points, axis=0)
    ls = LineString(line)
    return np.array([ls.interpolate(d).coords[0] for d in np.linspace(0.0, ls.length, num_points)])


def clip_to_window(line: np.ndarray, half_x: float, half_y: float) -> list[np.ndarray]:
    """(N, 2) ego-frame polyline -> its pieces (M_k, 2) inside |x| <= half_x, |y| <= half_y, in order along it.

    MapTR's ground-truth convention: a line that leaves the perception window and comes back is two
    instances; what lies outside is not scored. Touching the border in a point leaves no piece.
    """
    line = np.asarray(line, dtype=np.float64)
    if len(line) < 2:
        inside = len(line) == 1 and abs(line[0, 0]) <= half_x and abs(line[0, 1]) <= half_y
        return [line] if inside else []
    clipped = LineString(line).intersection(box(-half_x, -half_y, half_x, half_y))
    parts = getattr(clipped, "geoms", [clipped])
    return [np.asarray(g.coords, dtype=np.float64) for g in parts
            if isinstance(g, LineString) and not g.is_empty and g.length > 0]


def chamfer_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Chamfer distance of point sets (N, 2), (M, 2): mean of the two mean nearest-neighbour distances."""
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)  # (N, M)
    return float((d.min(1).mean() + d.min(0).mean()) / 2)


def _tp_fp(pred: list[tuple[np.ndarray, float]], gts: list[np.ndarray], thresholds, num_points) -> tuple[np.ndarray, dict, dict]:
    """One frame, one class: scores (P,), per-threshold TP flags (P,) and matched ground truths (G,),
    greedy by score as MapTR / mmdet tpfp."""
    scores = np.array([s for _, s in pred], dtype=np.float64)
    flags = {thr: np.zeros(len(pred), dtype=bool) for thr in thresholds}
    matched = {thr: np.zeros(len(gts), dtype=bool) for thr in thresholds}
    if not pred or not gts:
        return scores, flags, matched
    ps = [resample_polyline(p, num_points) for p, _ in pred]
    gs = [resample_polyline(g, num_points) for g in gts]
    cd = np.array([[chamfer_distance(p, g) for g in gs] for p in ps])  # (P, G)
    best, best_gt = cd.min(1), cd.argmin(1)
    for thr in thresholds:
        covered = matched[thr]
        for i in np.argsort(-scores, kind="stable"):
            if best[i] <= thr and not covered[best_gt[i]]:
                covered[best_gt[i]] = True
                flags[thr][i] = True
    return scores, flags, matched


def average_precision(tp: np.ndarray, scores: np.ndarray, num_gts: int) -> float:
    """Area under the precision envelope (VOC 'area' mode, as MapTR) of detections ranked by score."""
    if num_gts == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    tp_c = np.cumsum(tp[order])
    fp_c = np.cumsum(~tp[order])
    recall = tp_c / num_gts
    precision = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def chamfer_ap(
    predictions: Sequence[dict[str, list[tuple[np.ndarray, float]]]],
    ground_truth: Sequence[dict[str, list[np.ndarray]]],
    thresholds: Sequence[float] = (0.5, 1.0, 1.5),
    classes: Sequence[str] = ROAD_CLASSES,
    num_points: int = 100,
) -> dict:
    """MapTR Chamfer-distance AP over frames.

    predictions[f][cls] = [(polyline (N, 2), score), ...]; ground_truth[f][cls] = [polyline (M, 2), ...]
    (same frame order, same coordinates, e.g. ego metres). Each polyline is resampled to num_points evenly
    spaced points; a prediction is a true positive at threshold t when its nearest ground truth by Chamfer
    distance is within t metres and not already taken by a higher-scored prediction (greedy by score,
    per frame); AP is the area under the precision-recall envelope over all frames.
    Returns {'ap': {cls: {t: AP}}, 'class_ap': {cls: mean over t}, 'mAP': mean over classes with ground truth}.
    """
    if len(predictions) != len(ground_truth):
        raise ValueError(f"chamfer_ap: {len(predictions)} prediction frames for {len(ground_truth)} ground-truth frames")
    ap: dict[str, dict[float, float]] = {}
    for cls in classes:
        all_scores, all_flags, num_gts = [], {t: [] for t in thresholds}, 0
        for pred, gt in zip(predictions, ground_truth):
            gts = list(gt.get(cls, []))
            scores, flags, _ = _tp_fp(list(pred.get(cls, [])), gts, thresholds, num_points)
            num_gts += len(gts)
            all_scores.append(scores)
            for t in thresholds:
                all_flags[t].append(flags[t])
        scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
        ap[cls] = {t: average_precision(np.concatenate(all_flags[t]) if all_flags[t] else np.zeros(0, bool), scores, num_gts)
                   for t in thresholds}
    class_ap = {c: float(np.mean(list(v.values()))) for c, v in ap.items()}
    valid = [v for v in class_ap.values() if not np.isnan(v)]
    return {"ap": ap, "class_ap": class_ap, "mAP": float(np.mean(valid)) if valid else float("nan")}


def line_outcomes(
    predictions: Sequence[dict[str, list[tuple[np.ndarray, float]]]],
    ground_truth: Sequence[dict[str, list[np.ndarray]]],
    threshold: float = 1.0,
    classes: Sequence[str] = ROAD_CLASSES,
    num_points: int = 100,
    traced_fraction: float = 0.8,
) -> dict[str, dict[str, float | int]]:
    """What became of each ground-truth line at one Chamfer threshold (inputs as chamfer_ap), per class:
    'matched' (a true positive of chamfer_ap), 'traced' (not matched, yet >= traced_fraction of its
    resampled points lie within `threshold` of some predicted line: the raster has it, the instance
    differs, e.g. one predicted line runs on through a gap where the ground truth is cut in two) or
    'missed' (the rest). -> {cls: {'lines': G, 'matched': share, 'traced': share, 'missed': share}}."""
    out: dict[str, dict[str, float | int]] = {}
    for cls in classes:
        counts = {"matched": 0, "traced": 0, "missed": 0}
        for pred, gt in zip(predictions, ground_truth, strict=True):
            preds, gts = list(pred.get(cls, [])), list(gt.get(cls, []))
            if not gts:
                continue
            _, _, matched = _tp_fp(preds, gts, (threshold,), num_points)
            lines = [np.asarray(p, np.float64) for p, _ in preds if len(p) >= 2]
            drawn = MultiLineString(lines) if lines else None
            for g, hit in zip(gts, matched[threshold]):
                if hit:
                    counts["matched"] += 1
                    continue
                points = shapely.points(resample_polyline(g, num_points))  # (num_points,)
                near = drawn is not None and (shapely.distance(points, drawn) <= threshold).mean() >= traced_fraction
                counts["traced" if near else "missed"] += 1
        n = sum(counts.values())
        out[cls] = {"lines": n, **{k: (v / n if n else float("nan")) for k, v in counts.items()}}
    return out
