"""Greedy non-maximum suppression on rotated BEV boxes, per class (lecture Part 1: NMS is done per class).

A box is suppressed by a kept, higher-ranked box of its class when their rotated BEV IoU exceeds the
threshold or, with per-class `radii`, when their centres lie closer than the class's radius (CenterPoint's
circle NMS: small objects such as pedestrians and cones barely overlap their own duplicates one anchor cell
away, so IoU alone keeps them).

The fast path (`batched_nms_bev`) is one numba pass over the boxes in rank order (score descending, ties by
class then index): a kept box tests only the later, still unsuppressed boxes of its own class, and computes
the exact rotated IoU (convex polygon clipping, float64) only for those whose axis-aligned bounding rectangles
overlap — boxes whose rectangles do not overlap have IoU 0. Suppressed boxes never suppress, so they are never tested; the
pass stops once `max_keep` boxes are kept (later ranks cannot change the first ones). The previous dense
implementation (all near pairs through perception.boxes.rotated_bev_iou in torch, then the greedy loop) is
kept as `batched_nms_bev_reference` for the tests and the benchmark (bench/postprocess.py).
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import Tensor

from perception.boxes import rotated_bev_iou


def _check(name: str, boxes: Tensor, scores: Tensor, labels: Tensor | None = None) -> None:
    if boxes.dim() != 2 or boxes.shape[-1] < 7 or scores.shape != boxes.shape[:1]:
        raise ValueError(f"{name}: need boxes (N, >=7) and scores (N,), got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    if labels is not None and labels.shape != scores.shape:
        raise ValueError(f"{name}: labels {tuple(labels.shape)} and scores {tuple(scores.shape)} differ")


def rank_order(scores: Tensor, labels: Tensor) -> Tensor:
    """(N,) scores and labels -> (N,) indices by descending score, ties by ascending label, then ascending index."""
    by_label = torch.sort(labels, stable=True).indices
    return by_label[torch.sort(scores[by_label], descending=True, stable=True).indices]


@njit(cache=True, nogil=True)
def _row_max(probs, scores, labels):
    """Row-wise max and first argmax of a (N, C) float array; returns False at a NaN (torch's rules then apply)."""
    for i in range(probs.shape[0]):
        best, arg = probs[i, 0], 0
        for c in range(probs.shape[1]):
            v = probs[i, c]
            if v != v:
                return False
            if v > best:
                best, arg = v, c
        scores[i], labels[i] = best, arg
    return True


def best_class(probs: Tensor) -> tuple[Tensor, Tensor]:
    """(N, C) class scores -> (N,) best score and (N,) int64 class: exactly probs.max(dim=-1) (first index among
    equal scores), in one numba pass on CPU (torch's reduction over a short last dimension is slow)."""
    if probs.dim() != 2 or probs.shape[1] == 0:
        raise ValueError(f"best_class: need (N, C >= 1) scores, got {tuple(probs.shape)}")
    if probs.device.type != "cpu" or probs.dtype not in (torch.float32, torch.float64) or probs.requires_grad:
        return probs.max(dim=-1)
    p = probs.contiguous().numpy()
    scores, labels = np.empty(p.shape[0], dtype=p.dtype), np.empty(p.shape[0], dtype=np.int64)
    if not _row_max(p, scores, labels):
        return probs.max(dim=-1)
    return torch.from_numpy(scores), torch.from_numpy(labels)


@njit(cache=True, nogil=True)
def _clip_area(px, py, n, qx, qy, tx, ty):
    """Area of the convex polygon (px, py)[:n] clipped by the CCW quadrilateral (qx, qy) (Sutherland-Hodgman).

    px/py are overwritten; tx/ty are scratch of the same size (>= 64)."""
    for e in range(4):
        ax, ay = qx[e], qy[e]
        ex, ey = qx[(e + 1) % 4] - ax, qy[(e + 1) % 4] - ay
        m = 0
        for k in range(n):
            cx, cy = px[k], py[k]
            dx, dy = px[(k + 1) % n], py[(k + 1) % n]
            sc = ex * (cy - ay) - ey * (cx - ax)  # >= 0: inside (left of the CCW edge)
            sd = ex * (dy - ay) - ey * (dx - ax)
            if sc >= 0:
                tx[m], ty[m] = cx, cy
                m += 1
            if (sc >= 0) != (sd >= 0):
                t = sc / (sc - sd)
                tx[m], ty[m] = cx + t * (dx - cx), cy + t * (dy - cy)
                m += 1
        n = m
        if n < 3:
            return 0.0
        for k in range(n):
            px[k], py[k] = tx[k], ty[k]
    area = 0.0
    for k in range(n):
        area += px[k] * py[(k + 1) % n] - px[(k + 1) % n] * py[k]
    return 0.5 * abs(area)


@njit(cache=True, nogil=True)
def _greedy_nms(boxes, labels, thr, max_keep, radius):
    """Greedy NMS over boxes already in rank order -> positions kept, in order. A kept box scans only the later
    boxes of its class (positions grouped by class once, rank order kept within each class).

    boxes (N, 7) float64 (x, y, z, w, l, h, yaw); labels (N,) int64; radius (N,) float64 suppression radius of
    each box's class (0: IoU only).
    """
    n = labels.shape[0]
    ox, oy = np.empty((n, 4)), np.empty((n, 4))  # CCW corner offsets from the centre, ego axes
    hx, hy = np.zeros(n), np.zeros(n)  # half extents of the axis-aligned bounding rectangles
    area = np.empty(n)
    sx, sy = np.array([0.5, -0.5, -0.5, 0.5]), np.array([0.5, 0.5, -0.5, -0.5])
    for i in range(n):
        c, s = np.cos(boxes[i, 6]), np.sin(boxes[i, 6])
        for k in range(4):
            u, v = sx[k] * boxes[i, 4], sy[k] * boxes[i, 3]
            ox[i, k], oy[i, k] = c * u - s * v, s * u + c * v
            hx[i], hy[i] = max(hx[i], abs(ox[i, k])), max(hy[i], abs(oy[i, k]))
        area[i] = boxes[i, 3] * boxes[i, 4]
    grouped = np.argsort(labels, kind="mergesort")  # positions by class, rank order within a class
    slot = np.empty(n, dtype=np.int64)  # where each position stands in `grouped`
    group_end = np.empty(n, dtype=np.int64)  # end in `grouped` of the position's class
    for g in range(n):
        slot[grouped[g]] = g
    end = n
    for g in range(n - 1, -1, -1):
        if g < n - 1 and labels[grouped[g]] != labels[grouped[g + 1]]:
            end = g + 1
        group_end[grouped[g]] = end
    suppressed = np.zeros(n, dtype=np.bool_)
    keep = np.empty(n, dtype=np.int64)
    px, py = np.empty(64), np.empty(64)  # each clip at most doubles the vertex count: 4 -> 64
    qx, qy = np.empty(4), np.empty(4)
    tx, ty = np.empty(64), np.empty(64)
    nk = 0
    for i in range(n):
        if suppressed[i]:
            continue
        keep[nk] = i
        nk += 1
        if nk >= max_keep:
            break
        for g in range(slot[i] + 1, group_end[i]):  # the later boxes of i's class
            j = grouped[g]
            if suppressed[j]:
                continue
            dx, dy = boxes[j, 0] - boxes[i, 0], boxes[j, 1] - boxes[i, 1]
            if dx * dx + dy * dy < radius[i] * radius[i]:  # centres within the class's radius
                suppressed[j] = True
                continue
            iou = 0.0
            if abs(dx) < hx[i] + hx[j] and abs(dy) < hy[i] + hy[j]:  # bounding rectangles meet: exact IoU, i's frame
                for k in range(4):
                    px[k], py[k] = ox[i, k], oy[i, k]
                    qx[k], qy[k] = ox[j, k] + dx, oy[j, k] + dy
                inter = _clip_area(px, py, 4, qx, qy, tx, ty)
                iou = inter / max(area[i] + area[j] - inter, 1e-12)
            if iou > thr:
                suppressed[j] = True
    return keep[:nk]


def _box_radii(radii, labels: Tensor) -> np.ndarray:
    """Per-class radii (C,) metres (None: none) -> (N,) float64 radius of each box's class; checks them."""
    lab = labels.detach().cpu().to(torch.int64).numpy()
    if radii is None:
        return np.zeros(lab.shape[0])
    r = np.asarray(radii, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(r) & (r >= 0)):
        raise ValueError(f"NMS radii must be finite and >= 0 metres, got {r.tolist()}")
    if lab.size and int(lab.max()) >= r.shape[0]:
        raise ValueError(f"NMS radii: {r.shape[0]} radii for labels up to {int(lab.max())}")
    return r[lab]


def batched_nms_bev(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float, max_keep: int | None = None,
                    radii=None) -> Tensor:
    """Per-class greedy NMS: boxes (N, >=7), scores (N,), labels (N,) -> kept indices (K,) int64 by descending score.

    A box is dropped when its exact rotated BEV IoU with an already kept, higher-ranked box of its class is
    > iou_threshold, or when its centre lies within `radii[label]` metres of that box's (radii (C,), per class;
    None or 0: IoU only). Rank: descending score, ties by ascending label, then index. `max_keep` returns only
    the first max_keep of the kept list (the same as slicing the full result, but stops early).
    """
    _check("batched_nms_bev", boxes, scores, labels)
    radius = _box_radii(radii, labels)
    n = boxes.shape[0]
    if n == 0 or (max_keep is not None and max_keep <= 0):
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = rank_order(scores, labels)
    b = boxes[order, :7].detach().cpu().to(torch.float64).numpy()  # (N, 7) exact widening of float32 boxes
    lab = labels[order].detach().cpu().to(torch.int64).numpy()
    kept = _greedy_nms(b, lab, float(iou_threshold), n if max_keep is None else int(max_keep), radius[order.cpu().numpy()])
    return order[torch.from_numpy(kept).to(order.device)]


def nms_bev(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS of one class. boxes (N, >=7), scores (N,) -> kept indices (K,) int64, by descending score.

    A box is dropped when its exact rotated BEV IoU with an already kept, higher-scored box is > iou_threshold.
    Ties in score keep the lower index first.
    """
    _check("nms_bev", boxes, scores)
    return batched_nms_bev(boxes, scores, torch.zeros(scores.shape, dtype=torch.int64, device=scores.device), iou_threshold)


# ---- the previous dense implementation: reference for tests and the benchmark --------------------------
def nms_bev_reference(boxes: Tensor, scores: Tensor, iou_threshold: float, radius: float = 0.0) -> Tensor:
    """nms_bev as it was: all near pairs' IoU in torch (perception.boxes.rotated_bev_iou), then a numpy greedy
    loop; `radius` adds the centre-distance rule (all pairs' distances)."""
    _check("nms_bev_reference", boxes, scores)
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    over = (rotated_bev_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()  # (N, N), sorted order
    centres = boxes[order, :2].detach().cpu().to(torch.float64)
    over |= (torch.cdist(centres, centres) < radius).numpy()
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]  # marks only boxes after i that matter: earlier ones are already decided
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms_bev_reference(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float,
                              max_keep: int | None = None, radii=None) -> Tensor:
    """batched_nms_bev as it was: nms_bev_reference per class, then the kept indices sorted by descending score."""
    _check("batched_nms_bev_reference", boxes, scores, labels)
    radius = _box_radii(radii, labels)
    keep = [idx[nms_bev_reference(boxes[idx], scores[idx], iou_threshold, float(radius[idx[0]]))] for idx in
            (torch.nonzero(labels == c).flatten() for c in torch.unique(labels))]
    if not keep:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    keep_t = torch.cat(keep)
    return keep_t[torch.sort(scores[keep_t], descending=True, stable=True).indices][:max_keep]
