"""Losses against the lecture's formulas, evaluated element by element in plain Python."""
import math

import pytest
import torch

from perception.losses import cross_entropy, sigmoid_focal_loss, smooth_l1_loss


def _focal_ref(z: float, y: float, alpha: float, gamma: float) -> float:
    p = 1 / (1 + math.exp(-z))
    p_t = p if y == 1 else 1 - p
    alpha_t = alpha if y == 1 else 1 - alpha
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (0.75, 1.0)])
def test_focal_loss_matches_formula(alpha, gamma):
    logits = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.5, 4.0], dtype=torch.float64)
    targets = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    got = sigmoid_focal_loss(logits, targets, alpha, gamma)
    ref = torch.tensor([_focal_ref(z, y, alpha, gamma) for z, y in zip(logits.tolist(), targets.tolist())], dtype=torch.float64)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha, gamma, reduction="sum"), ref.sum())


def test_focal_loss_gamma0_no_alpha_is_bce():
    logits = torch.randn(20, dtype=torch.float64)
    targets = (torch.rand(20) > 0.5).double()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha=-1, gamma=0.0), bce)


def test_focal_loss_down_weights_easy_examples():
    easy = sigmoid_focal_loss(torch.tensor([4.0]), torch.tensor([1.0]))
    hard = sigmoid_focal_loss(torch.tensor([-4.0]), torch.tensor([1.0]))
    assert easy.item() < 1e-3 * hard.item()


def _smooth_ref(x: float, beta: float) -> float:
    if beta == 1.0:  # the lecture's form, written literally
        return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5
    return 0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta


@pytest.mark.parametrize("beta", [1.0, 1 / 9, 2.0])
def test_smooth_l1_matches_formula(beta):
    pred = torch.tensor([-3.0, -1.0, -0.999, -0.2, 0.0, 0.05, 0.5, 1.0, 1.5, 4.0], dtype=torch.float64)
    target = torch.tensor([0.0, 0.0, 0.0, 0.1, 0.0, 0.0, -0.5, 0.0, 0.0, 1.0], dtype=torch.float64)
    ref = torch.tensor([_smooth_ref(p - t, beta) for p, t in zip(pred.tolist(), target.tolist())], dtype=torch.float64)
    torch.testing.assert_close(smooth_l1_loss(pred, target, beta=beta), ref)
    torch.testing.assert_close(smooth_l1_loss(pred, target, beta=beta, reduction="mean"), ref.mean())


def test_cross_entropy_matches_formula():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]], dtype=torch.float64)
    target = torch.tensor([0, 2])
    ref = sum(-math.log(math.exp(logits[i, target[i]]) / sum(math.exp(v) for v in logits[i].tolist())) for i in range(2)) / 2
    assert cross_entropy(logits, target).item() == pytest.approx(ref)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="shape"):
        sigmoid_focal_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        smooth_l1_loss(torch.zeros(3), torch.zeros(4))
