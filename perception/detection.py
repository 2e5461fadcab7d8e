"""3D detection head on the BEV feature: anchors per cell, focal + smooth-L1 loss, decode with per-class NMS.

Anchor assignment (documented choice): each anchor is matched only to ground-truth boxes of its own class
by SECOND's 'nearest BEV' IoU (axis-aligned IoU of the boxes snapped to their nearest axis, exact for
yaws 0 and pi/2 — the anchors' yaws). IoU >= pos_iou is positive, < neg_iou negative, in between
ignored. Every ground-truth box inside the grid also gets its own best anchor as a positive (highest IoU;
when no same-class anchor overlaps it, the nearest cell centre with the nearest anchor yaw; an anchor
taken by another box goes to the next best), so small objects such as cones on 1.6 m cells are never
left without a positive. NMS uses the exact rotated BEV IoU (perception.boxes.rotated_bev_iou).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from perception.anchors import DEFAULT_ANCHOR_SIZES, DEFAULT_ANCHOR_YAWS, make_anchors
from perception.boxes import BOX_DIM, CODE_SIZE, axis_aligned_iou, decode_boxes, encode_boxes, nearest_bev_rects, wrap_angle
from schema.classes import DETECTION_NAMES
from perception.grid import BEVGrid
from perception.losses import sigmoid_focal_loss, smooth_l1_loss
from perception.nms import batched_nms_bev, best_class
from perception.still_speed import zero_slow_velocities
from perception.structures import Detections


@dataclass(frozen=True)
class DetectionHeadConfig:
    anchor_sizes: tuple[tuple[float, float, float], ...] = DEFAULT_ANCHOR_SIZES  # (w, l, h) per detection class
    anchor_yaws: tuple[float, ...] = DEFAULT_ANCHOR_YAWS  # radians; 0 and pi/2
    hidden_channels: int = 64  # width of the shared 3x3 conv before the 1x1 predictors
    velocity_scale: float = 4.0  # m/s per unit of the velocity code t_v = v / velocity_scale
    pos_iou: float = 0.45  # nearest-BEV IoU at or above which an anchor is positive (coarse 1.6 m cells: below SECOND's 0.6)
    neg_iou: float = 0.3  # below which it is negative; in between it is ignored
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    smooth_l1_beta: float = 1.0  # the lecture's smooth L1 (0.5 x^2 if |x| < 1 else |x| - 0.5)
    cls_weight: float = 1.0
    reg_weight: float = 2.0
    code_weights: tuple[float, ...] = (1.0,) * CODE_SIZE  # tx ty tz tw tl th sin cos tvx tvy
    prior_prob: float = 0.01  # initial foreground probability (focal-loss bias init)
    score_threshold: float = 0.3
    nms_pre: int = 1000  # top-k candidates per frame before NMS
    nms_iou: float = 0.2  # rotated BEV IoU above which a lower-scored same-class box is suppressed
    # ... or whose centre lies this close (metres, per class in DETECTION_NAMES order; 0 = IoU only): CenterPoint's
    # circle NMS, fitted per weights file by `bevstream calibrate`
    nms_radius_m: tuple[float, ...] = (0.0,) * len(DETECTION_NAMES)
    # a kept box slower than its class's still speed (m/s, DETECTION_NAMES order; 0 = off) is reported at velocity 0:
    # the velocity noise of parked objects, fitted per weights file by `bevstream calibrate` (perception.still_speed)
    still_speed_mps: tuple[float, ...] = (0.0,) * len(DETECTION_NAMES)
    max_detections: int = 200
    # Classes whose heading is only defined modulo pi (a barrier looks the same turned round; the devkit scores
    # its orientation with period pi, and ignores a cone's): their yaw target is the one of yaw, yaw + pi
    # nearer the anchor's, so the head is not asked to guess a direction the image does not show.
    # E.g. ("barrier", "traffic_cone"); training only (decoding is unchanged).
    symmetric_yaw_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.anchor_sizes) != len(DETECTION_NAMES):
            raise ValueError(f"DetectionHeadConfig: {len(self.anchor_sizes)} anchor sizes for {len(DETECTION_NAMES)} classes")
        if len(self.code_weights) != CODE_SIZE:
            raise ValueError(f"DetectionHeadConfig: code_weights needs {CODE_SIZE} entries, got {len(self.code_weights)}")
        if not 0 <= self.neg_iou <= self.pos_iou <= 1:
            raise ValueError(f"DetectionHeadConfig: need 0 <= neg_iou ({self.neg_iou}) <= pos_iou ({self.pos_iou}) <= 1")
        for key in ("nms_radius_m", "still_speed_mps"):
            values = getattr(self, key)
            if len(values) != len(DETECTION_NAMES) or not all(v >= 0 for v in values):
                raise ValueError(f"DetectionHeadConfig: {key} needs {len(DETECTION_NAMES)} values >= 0 "
                                 f"(one per class of {DETECTION_NAMES}), got {values}")
        unknown = sorted(set(self.symmetric_yaw_classes) - set(DETECTION_NAMES))
        if unknown:
            raise ValueError(f"DetectionHeadConfig: symmetric_yaw_classes {unknown} are not detection classes {DETECTION_NAMES}")


@dataclass
class AnchorTargets:
    """Per-anchor training targets of one batch item."""

    cls_target: Tensor  # (NA, num_classes) one-hot for positives, zeros otherwise
    cls_weight: Tensor  # (NA,) 1 for positive and negative anchors, 0 for ignored
    pos_mask: Tensor  # (NA,) bool
    reg_target: Tensor  # (P, CODE_SIZE) for the positive anchors, in pos_mask order
    matched_gt: Tensor  # (NA,) int64 index of the assigned ground-truth box, -1 if none


def _yaw_distance_mod_pi(a: Tensor, b: Tensor) -> Tensor:
    d = torch.remainder(a - b, math.pi)
    return torch.minimum(d, math.pi - d)


def fold_symmetric_yaw(boxes: Tensor, anchor_yaws: Tensor, symmetric: Tensor) -> Tensor:
    """(P, 9) target boxes, (P,) anchor yaws, (P,) bool -> boxes whose yaw, where `symmetric`, is turned by pi
    when that brings it within pi/2 of the anchor's (the sin/cos target then has cos >= 0)."""
    turn = symmetric & (torch.cos(boxes[:, 6] - anchor_yaws) < 0)
    if not bool(turn.any()):
        return boxes
    out = boxes.clone()
    out[:, 6] = wrap_angle(out[:, 6] + math.pi * turn.to(out.dtype))
    return out


class DetectionHead(nn.Module):
    """BEV feature (B, C, H, W) -> per-anchor class logits and box deltas; loss and decode on top."""

    def __init__(self, in_channels: int, grid: BEVGrid, config: DetectionHeadConfig = DetectionHeadConfig()):
        super().__init__()
        self.grid, self.config = grid, config
        self.num_classes = len(DETECTION_NAMES)
        anchors, anchor_labels = make_anchors(grid, config.anchor_sizes, config.anchor_yaws)
        self.num_anchors_per_cell = len(config.anchor_sizes) * len(config.anchor_yaws)
        self.register_buffer("anchors", anchors, persistent=False)  # (H*W*A, 7)
        self.register_buffer("anchor_labels", anchor_labels, persistent=False)  # (H*W*A,)
        self.register_buffer("anchor_rects", nearest_bev_rects(anchors), persistent=False)  # (H*W*A, 4)
        self.register_buffer("code_weights", torch.tensor(config.code_weights), persistent=False)
        symmetric = torch.tensor([name in config.symmetric_yaw_classes for name in DETECTION_NAMES])
        self.register_buffer("symmetric_yaw", symmetric, persistent=False)  # (num_classes,) bool
        a, c = self.num_anchors_per_cell, self.num_classes
        self.shared = nn.Sequential(nn.Conv2d(in_channels, config.hidden_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.cls = nn.Conv2d(config.hidden_channels, a * c, 1)
        self.reg = nn.Conv2d(config.hidden_channels, a * CODE_SIZE, 1)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.constant_(self.cls.bias, -math.log((1 - config.prior_prob) / config.prior_prob))
        nn.init.normal_(self.reg.weight, std=0.01)
        nn.init.zeros_(self.reg.bias)

    def forward(self, bev: Tensor) -> dict[str, Tensor]:
        """bev (B, C, H, W) -> {'cls_logits': (B, H*W*A, num_classes), 'box_deltas': (B, H*W*A, CODE_SIZE)}."""
        if bev.dim() != 4 or tuple(bev.shape[-2:]) != self.grid.shape:
            raise ValueError(f"DetectionHead: expected BEV features (B, C, {self.grid.shape[0]}, {self.grid.shape[1]}), got {tuple(bev.shape)}")
        b, _, h, w = bev.shape
        x = self.shared(bev).permute(0, 2, 3, 1)  # (B, H, W, hidden), a view
        a = self.num_anchors_per_cell
        # The 1x1 convs as matmuls on the channels-last view: the outputs come out (B, H, W, A*K) already,
        # instead of a strided (B, A*K, H, W) -> (B, H, W, A*K) copy that cost more than the convs (CPU).
        cls = F.linear(x, self.cls.weight.flatten(1), self.cls.bias).reshape(b, h * w * a, self.num_classes)
        reg = F.linear(x, self.reg.weight.flatten(1), self.reg.bias).reshape(b, h * w * a, CODE_SIZE)
        return {"cls_logits": cls, "box_deltas": reg}

    # ---- training -------------------------------------------------------------------------------
    def assign(self, gt_boxes: Tensor, gt_labels: Tensor) -> AnchorTargets:
        """Targets of one batch item: gt_boxes (N, 9) ego frame, gt_labels (N,) int64."""
        cfg = self.config
        na = self.anchors.shape[0]
        if gt_boxes.dim() != 2 or gt_boxes.shape[1] != BOX_DIM or gt_labels.shape != gt_boxes.shape[:1]:
            raise ValueError(f"DetectionHead.assign: need gt_boxes (N, {BOX_DIM}) and gt_labels (N,), got "
                             f"{tuple(gt_boxes.shape)} and {tuple(gt_labels.shape)}")
        if gt_labels.numel() and (int(gt_labels.min()) < 0 or int(gt_labels.max()) >= self.num_classes):
            raise ValueError(f"DetectionHead.assign: gt_labels must be in 0..{self.num_classes - 1}")
        g = self.grid
        inside = ((gt_boxes[:, 0] >= g.x_min) & (gt_boxes[:, 0] < g.x_max)
                  & (gt_boxes[:, 1] >= g.y_min) & (gt_boxes[:, 1] < g.y_max))
        best_iou = self.anchors.new_zeros(na)
        matched = torch.full((na,), -1, dtype=torch.int64, device=self.anchors.device)
        forced_anchor, forced_gt = [], []
        gt_rects = nearest_bev_rects(gt_boxes)
        for c in torch.unique(gt_labels[inside]).tolist():
            a_idx = torch.nonzero(self.anchor_labels == c).flatten()  # anchors of class c
            g_idx = torch.nonzero((gt_labels == c) & inside).flatten()
            iou = axis_aligned_iou(self.anchor_rects[a_idx], gt_rects[g_idx])  # (Na_c, Ng_c)
            m, arg = iou.max(dim=1)
            best_iou[a_idx] = m
            matched[a_idx] = torch.where(m > 0, g_idx[arg], matched[a_idx])
            # best anchor per GT: highest IoU, else (score <= 0) nearest centre and yaw; one GT per anchor,
            # so two objects in one cell take different anchors (best-placed GT chooses first)
            dist = torch.cdist(self.anchors[a_idx, :2], gt_boxes[g_idx, :2])  # (Na_c, Ng_c)
            dist = dist + 0.1 * _yaw_distance_mod_pi(self.anchors[a_idx, 6:7], gt_boxes[g_idx, 6][None])
            score = torch.where(iou > 0, iou, -dist)
            for g in score.max(dim=0).values.argsort(descending=True).tolist():
                best = int(score[:, g].argmax())
                score[best, :] = -float("inf")
                forced_anchor.append(a_idx[best : best + 1])
                forced_gt.append(g_idx[g : g + 1])
        pos = best_iou >= cfg.pos_iou
        neg = best_iou < cfg.neg_iou
        if forced_anchor:
            fa, fg = torch.cat(forced_anchor), torch.cat(forced_gt)
            matched[fa] = fg
            pos[fa] = True
            neg[fa] = False
        matched = torch.where(pos, matched, torch.full_like(matched, -1))
        cls_target = self.anchors.new_zeros(na, self.num_classes)
        pos_idx = torch.nonzero(pos).flatten()
        pos_labels = gt_labels[matched[pos_idx]]
        cls_target[pos_idx, pos_labels] = 1.0
        target_boxes = fold_symmetric_yaw(gt_boxes[matched[pos_idx]], self.anchors[pos_idx, 6], self.symmetric_yaw[pos_labels])
        reg_target = encode_boxes(target_boxes, self.anchors[pos_idx], cfg.velocity_scale)
        return AnchorTargets(cls_target, (pos | neg).to(cls_target.dtype), pos, reg_target, matched)

    def loss(self, preds: dict[str, Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor],
             gt_velocity_valid: list[Tensor] | None = None) -> dict[str, Tensor]:
        """Focal loss over non-ignored anchors and smooth L1 on positives, both divided by the batch's positives.

        gt_velocity_valid[b] (N_b,) bool, optional: False drops the velocity terms of anchors matched to that
        box (nuScenes gives NaN velocity for some annotations; lab.groundtruth stores them as 0).
        """
        cls_logits, deltas = preds["cls_logits"], preds["box_deltas"]  # (B, NA, C), (B, NA, CODE)
        if len(gt_boxes) != cls_logits.shape[0] or len(gt_labels) != cls_logits.shape[0]:
            raise ValueError(f"DetectionHead.loss: {len(gt_boxes)} gt_boxes / {len(gt_labels)} gt_labels lists for batch {cls_logits.shape[0]}")
        if gt_velocity_valid is not None and len(gt_velocity_valid) != cls_logits.shape[0]:
            raise ValueError(f"DetectionHead.loss: {len(gt_velocity_valid)} gt_velocity_valid entries for batch {cls_logits.shape[0]}")
        cfg = self.config
        cls_sum = cls_logits.new_zeros(())
        reg_sum = cls_logits.new_zeros(())
        num_pos = 0
        for b in range(cls_logits.shape[0]):
            t = self.assign(gt_boxes[b].to(cls_logits), gt_labels[b].to(cls_logits.device, torch.int64))
            fl = sigmoid_focal_loss(cls_logits[b], t.cls_target, cfg.focal_alpha, cfg.focal_gamma)  # (NA, C)
            cls_sum = cls_sum + (fl.sum(-1) * t.cls_weight).sum()
            if t.reg_target.shape[0]:
                sl = smooth_l1_loss(deltas[b][t.pos_mask], t.reg_target, beta=cfg.smooth_l1_beta)  # (P, CODE)
                w = self.code_weights.expand_as(sl)
                if gt_velocity_valid is not None:
                    valid = torch.as_tensor(gt_velocity_valid[b], device=sl.device).bool()[t.matched_gt[t.pos_mask]]
                    w = w.clone()
                    w[:, -2:] *= valid[:, None].to(w.dtype)
                reg_sum = reg_sum + (sl * w).sum()
            num_pos += int(t.pos_mask.sum())
        norm = max(num_pos, 1)
        return {"det_cls": cfg.cls_weight * cls_sum / norm, "det_reg": cfg.reg_weight * reg_sum / norm}

    # ---- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, preds: dict[str, Tensor], nms=batched_nms_bev, track_filters=None) -> list[Detections]:
        """Per batch item: score threshold, top-k (nms_pre), per-class rotated-BEV NMS (with the class's circle
        radius), keep max_detections, velocity 0 below the class's still speed.

        `nms(boxes, scores, labels, iou_threshold, max_keep, radii)` is the NMS (perception.nms; its reference
        implementation for comparisons); with max_keep it stops after the max_detections best kept boxes.
        `track_filters`, one per item or None: (boxes (k, 9), scores, labels) -> (boxes, scores), run on the kept
        boxes before the still speeds (perception.tracking.BoxTracker.track_filter).
        """
        cfg = self.config
        out = []
        filters = track_filters if track_filters is not None else [None] * len(preds["cls_logits"])
        if len(filters) != len(preds["cls_logits"]):
            raise ValueError(f"decode: {len(filters)} track filters for a batch of {len(preds['cls_logits'])}")
        for cls_logits, deltas, track_filter in zip(preds["cls_logits"], preds["box_deltas"], filters):  # (NA, C), (NA, CODE)
            scores, labels = best_class(torch.sigmoid(cls_logits))  # (NA,), = .max(dim=-1)
            idx = torch.nonzero(scores >= cfg.score_threshold).flatten()
            if idx.numel() > cfg.nms_pre:
                idx = idx[scores[idx].topk(cfg.nms_pre).indices]
            boxes = decode_boxes(deltas[idx], self.anchors[idx], cfg.velocity_scale)  # (K, 9)
            keep = nms(boxes, scores[idx], labels[idx], cfg.nms_iou, max_keep=cfg.max_detections, radii=cfg.nms_radius_m)
            kept, kept_scores, kept_labels = boxes[keep], scores[idx][keep], labels[idx][keep]  # (k, 9), (k,), (k,)
            if track_filter is not None:
                kept, kept_scores = track_filter(kept, kept_scores, kept_labels)
            kept = zero_slow_velocities(kept, kept_labels, cfg.still_speed_mps)
            out.append(Detections(kept.float(), kept_scores.float(), kept_labels))
        return out
