"""The ray / oriented-box slab test (numba, inlined) and the box corner signs, shared by the camera renderer
and the lidar."""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(inline="always", nogil=True)
def slab_hit(d0, d1, d2, o0, o1, o2, h0, h1, h2):  # pragma: no cover - compiled
    """Ray o + t d against the box |x_a| <= h_a, all in the box frame -> (t_near, t_far, axis, d_axis).

    The ray enters at t_near through a face normal to `axis` (d_axis: the ray's component along it;
    the face is the + one when d_axis < 0) and leaves at t_far. A miss has t_near > t_far; a ray
    parallel to a slab and outside it misses at once.
    """
    tn, tf, ax, dsel = -1e30, 1e30, 0, 0.0
    for a in range(3):
        if a == 0:
            d, o, hb = d0, o0, h0
        elif a == 1:
            d, o, hb = d1, o1, h1
        else:
            d, o, hb = d2, o2, h2
        if abs(d) < 1e-12:
            if o < -hb or o > hb:
                return 1e30, -1e30, -1, 0.0
            continue
        t1 = (-hb - o) / d
        t2 = (hb - o) / d
        if t1 > t2:
            t1, t2 = t2, t1
        if t1 > tn:
            tn, ax, dsel = t1, a, d
        if t2 < tf:
            tf = t2
    return tn, tf, ax, dsel


# The eight corners of a box as signs of its half extents, (8, 3): corners differing in one sign
# bit (index bit 4 for x, 2 for y, 1 for z) share an edge.
BOX_CORNER_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], np.float64)
