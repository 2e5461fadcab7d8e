"""Segmentation and road-geometry metrics (lab/metrics.py) accumulated frame by frame over a split: sufficient
statistics (a confusion matrix; intersections and unions; every polyline with its frame), so the result over N
frames equals the metric computed on the N frames concatenated."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from lab.metrics import chamfer_ap, clip_to_window, confusion_matrix, line_outcomes, segmentation_scores
from schema.classes import ROAD_CLASSES, SEG_CLASSES

CHAMFER_THRESHOLDS: tuple[float, ...] = (0.5, 1.0, 1.5)
MAPTR_WINDOW_M: tuple[float, float] = (30.0, 15.0)  # MapTR's perception range: +-30 m along x (forward), +-15 m across
IGNORE_INDEX = 255


class SegmentationAccumulator:
    """Confusion matrix summed over frames and cameras; scores by lab.metrics.segmentation_scores."""

    def __init__(self, num_classes: int = len(SEG_CLASSES), ignore_index: int = IGNORE_INDEX, class_names: Sequence[str] = SEG_CLASSES):
        import torch

        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.class_names = tuple(class_names)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.images = 0

    def update(self, pred, target) -> None:
        """pred, target: integer label maps of the same shape, (H, W) or (N, H, W); target may hold ignore_index."""
        self.confusion += confusion_matrix(pred, target, self.num_classes, self.ignore_index)
        self.images += 1 if getattr(pred, "ndim", 2) == 2 else int(pred.shape[0])

    def result(self) -> dict | None:
        """PA, MPA, mIoU, FWIoU and per-class IoU (None for a class absent from labels and predictions); None without labels."""
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
        ap = chamfer_ap(preds, gts, self.thresholds, self.classes)
        return {"chamfer_AP": {c: {str(t): _none_if_nan(v) for t, v in ap["ap"][c].items()} for c in self.classes},
                "chamfer_AP_class_mean": {c: _none_if_nan(v) for c, v in ap["class_ap"].items()},
                "chamfer_mAP": _none_if_nan(ap["mAP"])}


def _none_if_nan(v) -> float | None:
    """JSON-friendly: NaN (a class without ground truth) -> None."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


