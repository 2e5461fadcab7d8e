"""Loss functions of the heads, written out as in the lecture (Part 1) so tests can check the formulas.

All take raw network outputs (logits, deltas) and return an unreduced or reduced tensor as asked.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_REDUCTIONS = ("none", "sum", "mean")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> Tensor:
    """Sigmoid focal loss FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t) per element (Lin et al. 2017).

    logits, targets: same shape, targets in [0, 1] (one-hot per class). alpha < 0 disables the
    alpha weighting. log(p_t) is computed as -BCE-with-logits for numerical stability.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"sigmoid_focal_loss: logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape")
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")  # -log(p_t)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return _reduce(loss, reduction)


def smooth_l1_loss(pred: Tensor, target: Tensor, beta: float = 1.0, reduction: str = "none") -> Tensor:
    """Smooth L1 of x = pred - target: 0.5 x^2 / beta if |x| < beta else |x| - 0.5 beta (beta=1: the lecture's form)."""
    if pred.shape != target.shape:
        raise ValueError(f"smooth_l1_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be >= 0, got {beta}")
    x = (pred - target).abs()
    if beta == 0:
        loss = x
    else:
        loss = torch.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)
    return _reduce(loss, reduction)


def cross_entropy(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean"
) -> Tensor:
    """Softmax cross entropy L = -sum_j y_j log p_j over the class dim 1 (thin wrapper of F.cross_entropy).

    logits (N, C, ...) and integer target (N, ...) with class indices, or float target of logits' shape.
    """
    if logits.dim() < 2:
        raise ValueError(f"cross_entropy: logits need a class dimension, got shape {tuple(logits.shape)}")
    return F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction=reduction)
