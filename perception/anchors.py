"""Anchor boxes on the BEV grid: every cell centre carries one anchor per (class, yaw).

Layout: anchors.reshape(H, W, A, 7) with A = num_classes * num_yaws, ordered class-major
(a = class * num_yaws + yaw_index); flattened index = (i * W + j) * A + a, the order in which the
detection head flattens its outputs.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from schema.classes import DETECTION_NAMES
from perception.grid import BEVGrid

# Class-typical box sizes (w, l, h) in metres, close to the nuScenes train-set means per class.
# z of the anchor centre is h/2: the nuScenes ego frame sits on the ground (ego_pose z = 0).
DEFAULT_ANCHOR_SIZES: tuple[tuple[float, float, float], ...] = (
    (1.95, 4.62, 1.73),  # car
    (2.52, 6.94, 2.84),  # truck
    (2.94, 11.19, 3.47),  # bus
    (2.92, 12.28, 3.87),  # trailer
    (2.82, 6.55, 3.21),  # construction_vehicle
    (0.67, 0.73, 1.77),  # pedestrian
    (0.77, 2.11, 1.47),  # motorcycle
    (0.61, 1.70, 1.29),  # bicycle
    (0.41, 0.41, 1.07),  # traffic_cone
    (2.49, 0.48, 0.98),  # barrier
)
DEFAULT_ANCHOR_YAWS: tuple[float, ...] = (0.0, math.pi / 2)
assert len(DEFAULT_ANCHOR_SIZES) == len(DETECTION_NAMES)


def make_anchors(
    grid: BEVGrid,
    sizes: tuple[tuple[float, float, float], ...] = DEFAULT_ANCHOR_SIZES,
    yaws: tuple[float, ...] = DEFAULT_ANCHOR_YAWS,
    z_centres: tuple[float, ...] | None = None,
    dtype=torch.float32,
) -> tuple[Tensor, Tensor]:
    """Anchors (H*W*A, 7) as (x, y, z, w, l, h, yaw) and their class index (H*W*A,) int64.

    sizes: (w, l, h) per class; z_centres: anchor centre height per class (default h/2).
    """
    if len(sizes) == 0 or len(yaws) == 0:
        raise ValueError("make_anchors: need at least one size and one yaw")
    if any(len(s) != 3 or min(s) <= 0 for s in sizes):
        raise ValueError(f"make_anchors: every size must be a positive (w, l, h), got {sizes}")
    if z_centres is None:
        z_centres = tuple(s[2] / 2 for s in sizes)
    if len(z_centres) != len(sizes):
        raise ValueError(f"make_anchors: {len(z_centres)} z_centres for {len(sizes)} sizes")
    h, w = grid.shape
    per_cell = []  # (A, 5) z, w, l, h, yaw
    classes = []
    for c, ((bw, bl, bh), z) in enumerate(zip(sizes, z_centres)):
        for yaw in yaws:
            per_cell.append((z, bw, bl, bh, yaw))
            classes.append(c)
    a = len(per_cell)
    per_cell_t = torch.tensor(per_cell, dtype=dtype)  # (A, 5)
    centres = grid.cell_centers(dtype=dtype)  # (H, W, 2)
    anchors = torch.cat(
        (centres[:, :, None, :].expand(h, w, a, 2), per_cell_t[None, None].expand(h, w, a, 5)), dim=-1
    )  # (H, W, A, 7)
    labels = torch.tensor(classes, dtype=torch.int64)[None, None].expand(h, w, a)
    return anchors.reshape(-1, 7).contiguous(), labels.reshape(-1).contiguous()
