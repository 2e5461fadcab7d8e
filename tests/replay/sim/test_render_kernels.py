"""The renderer's compiled loops against slow, obvious numpy references."""
from __future__ import annotations

import itertools

import numpy as np

from replay.sim.render_kernels import clip_near, to_uint8
from replay.sim.slab import BOX_CORNER_SIGNS


def _clip_near_reference(corners: np.ndarray, near: float) -> np.ndarray:
    """Corners in front of z = near, plus where each of the box's 12 edges crosses it (any order)."""
    pts = [c for c in corners if c[2] > near]
    for a, b in itertools.combinations(range(8), 2):
        if np.count_nonzero(BOX_CORNER_SIGNS[a] != BOX_CORNER_SIGNS[b]) != 1:
            continue  # not an edge
        za, zb = corners[a, 2], corners[b, 2]
        if (za - near) * (zb - near) < 0:
            pts.append(corners[a] + (near - za) / (zb - za) * (corners[b] - corners[a]))
    return np.array(pts).reshape(-1, 3)


def test_clip_near_matches_reference_on_boxes_across_the_near_plane():
    rng = np.random.default_rng(0)
    for _ in range(50):
        half = rng.uniform(0.2, 3.0, 3)
        centre = rng.uniform([-2, -2, -1.0], [2, 2, 2.0])
        corners = centre + BOX_CORNER_SIGNS * half
        got = clip_near(corners, 0.1)
        want = _clip_near_reference(corners, 0.1)
        assert got.shape == want.shape
        np.testing.assert_allclose(np.sort(got, axis=0), np.sort(want, axis=0), atol=1e-12)
        assert (got[:, 2] >= 0.1 - 1e-12).all()


def test_to_uint8_truncates_and_clips_like_numpy():
    rng = np.random.default_rng(1)
    rgb = rng.uniform(-50, 300, (7, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(to_uint8(rgb), np.clip(rgb, 0, 255).astype(np.uint8))


def test_box_corner_signs_are_the_eight_corners_with_edges_one_bit_apart():
    assert {tuple(r) for r in BOX_CORNER_SIGNS} == set(itertools.product((-1.0, 1.0), repeat=3))
    for a in range(8):
        for bit in (1, 2, 4):
            assert np.count_nonzero(BOX_CORNER_SIGNS[a] != BOX_CORNER_SIGNS[a ^ bit]) == 1
