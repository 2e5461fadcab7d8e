"""Greedy non-maximum suppression on rotated BEV boxes, per class (lecture Part 1: NMS is done per class)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from perception.boxes import rotated_bev_iou


def nms_bev(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS of one class. boxes (N, >=7), scores (N,) -> kept indices (K,) int64, by descending score.

    A box is dropped when its exact rotated BEV IoU with an already kept, higher-scored box is > iou_threshold.
    Ties in score keep the lower index first (stable sort).
    """
    if boxes.dim() != 2 or boxes.shape[-1] < 7 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"nms_bev: need boxes (N, >=7) and scores (N,), got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = rotated_bev_iou(boxes[order], boxes[order]) > iou_threshold  # (N, N), sorted order
    over = iou.cpu().numpy()
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]  # marks only boxes after i that matter: earlier ones are already decided
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms_bev(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Per-class greedy NMS: boxes (N, >=7), scores (N,), labels (N,) -> kept indices sorted by descending score."""
    if labels.shape != scores.shape:
        raise ValueError(f"batched_nms_bev: labels {tuple(labels.shape)} and scores {tuple(scores.shape)} differ")
    keep = [idx[nms_bev(boxes[idx], scores[idx], iou_threshold)] for idx in
            (torch.nonzero(labels == c).flatten() for c in torch.unique(labels))]
    if not keep:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    keep_t = torch.cat(keep)
    return keep_t[torch.sort(scores[keep_t], descending=True, stable=True).indices]
