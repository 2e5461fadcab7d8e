"""The slab test against a slow obvious reference: march along the ray and look where it is inside the box."""
from __future__ import annotations

import numpy as np
from numba import njit

from replay.sim.slab import slab_hit


@njit
def _hit(d, o, h):
    return slab_hit(d[0], d[1], d[2], o[0], o[1], o[2], h[0], h[1], h[2])


def _inside(p: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.all(np.abs(p) <= h, axis=-1)


def test_slab_hit_matches_marching_along_the_ray():
    rng = np.random.default_rng(0)
    ts = np.linspace(0.0, 20.0, 40001)  # step 0.5 mm
    hits = 0
    for _ in range(300):
        h = rng.uniform(0.2, 2.0, 3)
        o = rng.uniform(-6, 6, 3)
        d = rng.uniform(-1.5, 1.5, 3) * h - o  # aimed near the box: about half the rays hit
        d /= np.linalg.norm(d)
        if rng.random() < 0.2:
            d[rng.integers(3)] = 0.0  # parallel to one slab pair
        tn, tf, axis, d_axis = _hit(d, o, h)
        inside = _inside(o[None] + ts[:, None] * d[None], h)
        if tn > tf or tf < 0:  # a miss (or the box is behind the ray)
            assert not inside.any()
            continue
        hits += 1
        seen = ts[inside]
        assert abs(seen.max() - tf) < 1e-3
        if tn > 0:  # the ray starts outside: entry point on the face normal to `axis`
            assert abs(seen.min() - tn) < 1e-3
            entry = o + tn * d
            assert abs(abs(entry[axis]) - h[axis]) < 1e-9 and d_axis == d[axis]
            assert np.sign(entry[axis]) == -np.sign(d_axis)  # the face the ray looks into
    assert 50 < hits < 300
