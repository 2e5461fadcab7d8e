"""Anchors: count, sizes per class, centres on cell centres."""
import math

import pytest
import torch

from perception.anchors import DEFAULT_ANCHOR_SIZES, DEFAULT_ANCHOR_YAWS, make_anchors
from schema.classes import DETECTION_NAMES
from perception.grid import BEVGrid


def test_count_and_layout():
    grid = BEVGrid(x_min=-8.0, x_max=8.0, y_min=-4.8, y_max=4.8, resolution=1.6)  # 10 x 6 cells
    anchors, labels = make_anchors(grid)
    a = len(DETECTION_NAMES) * len(DEFAULT_ANCHOR_YAWS)
    assert anchors.shape == (10 * 6 * a, 7) and labels.shape == (10 * 6 * a,)
    per_cell = anchors.reshape(10, 6, a, 7)
    lab = labels.reshape(10, 6, a)
    for i in range(10):
        for j in range(6):
            xc, yc = -8.0 + (i + 0.5) * 1.6, -4.8 + (j + 0.5) * 1.6
            torch.testing.assert_close(per_cell[i, j, :, 0], torch.full((a,), xc))
            torch.testing.assert_close(per_cell[i, j, :, 1], torch.full((a,), yc))
            for k in range(a):
                c, y = divmod(k, len(DEFAULT_ANCHOR_YAWS))
                assert lab[i, j, k].item() == c
                w, l, h = DEFAULT_ANCHOR_SIZES[c]
                torch.testing.assert_close(per_cell[i, j, k, 2:6], torch.tensor([h / 2, w, l, h]))
                assert per_cell[i, j, k, 6].item() == pytest.approx(DEFAULT_ANCHOR_YAWS[y])


def test_default_grid_and_yaws():
    anchors, labels = make_anchors(BEVGrid())
    assert anchors.shape[0] == 64 * 64 * 20
    assert set(anchors[:, 6].unique().tolist()) == {0.0, float(torch.tensor(math.pi / 2))}
    assert torch.bincount(labels).tolist() == [64 * 64 * 2] * 10
    # centres are exactly the grid's cell centres
    torch.testing.assert_close(anchors.reshape(64, 64, 20, 7)[:, :, 0, :2], BEVGrid().cell_centers())
