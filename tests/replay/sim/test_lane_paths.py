"""Lane and sidewalk paths: arc length, sampling, stop lines and crossings."""
from __future__ import annotations

import numpy as np
import pytest

from replay.sim.lane_paths import Path, build_lane_paths, build_sidewalk_paths
from replay.sim.world import World


@pytest.fixture(scope="module")
def world():
    return World(0)


def test_closed_square_path_samples_wrap_and_curvature():
    pts = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    heading = np.array([0.0, np.pi / 2, np.pi, 3 * np.pi / 2])
    path = Path.from_curve(0, "lane", pts, heading, closed=True, hidden=0.0)
    assert path.length == pytest.approx(40.0) and path.ring == pytest.approx(40.0)
    p, h, _ = path.sample(np.array([5.0, 45.0, 35.0]))
    np.testing.assert_allclose(p, [[5.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    assert h[0] == pytest.approx(h[1])
    open_path = Path.from_curve(0, "lane", pts, heading, closed=False, hidden=7.0)
    assert open_path.length == pytest.approx(30.0) and open_path.ring == pytest.approx(37.0)


def test_lanes_have_sorted_stop_lines_and_sidewalks_crossings(world):
    lanes = build_lane_paths(world.roads, world.intersections, world.config)
    walks = build_sidewalk_paths(world.roads, world.intersections)
    assert len(lanes) == sum(2 * r.lanes_per_dir for r in world.roads)
    assert len(walks) == 2 * len(world.roads)
    assert any(len(p.stops) for p, _, _ in lanes)
    for path, road, _ in lanes:
        assert (np.diff(path.stops) >= 0).all() and ((path.stops >= 0) & (path.stops <= path.length)).all()
        assert ((path.stop_inter >= 0) & (path.stop_inter < len(world.intersections))).all()
    for walk in walks:
        assert (walk.cross_a <= walk.cross_b).all()
    # the same paths as the world's traffic uses
    for (a, _, _), (b, _, _) in zip(lanes, world.traffic.lanes):
        np.testing.assert_array_equal(a.points, b.points)
        np.testing.assert_array_equal(a.stops, b.stops)
