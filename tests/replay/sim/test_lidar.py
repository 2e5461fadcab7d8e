"""The simulated lidar: visible near agents get points, hidden or out-of-range agents get none; the sweep
round-trips through the nuScenes point-file layout."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from replay.sim.lidar import MIN_RANGE_M, N_BEAMS, RANGE_M, lidar_point_counts, lidar_sweep, write_pcd_bin
from replay.sim.rig import lidar_calibration
from replay.sim.world import World
from tests.replay.scenarios import place_agents, straight_time


@pytest.fixture(scope="module")
def world() -> World:
    return World(5)

def test_hidden_and_far_agents_get_no_points(world):
    t = straight_time(world)
    state = place_agents(world, t, [("bus", 12.0, 0.0), ("pedestrian", 24.0, 0.0), ("car", 8.0, 3.5),
                              ("car", RANGE_M + 15.0, 0.0)], id_prefix="a")
    counts = lidar_point_counts(world, state, lidar_calibration())
    assert set(counts) == {"a0", "a1", "a2", "a3"}
    assert counts["a0"] > 50 and counts["a2"] > 50  # near and visible
    assert counts["a1"] == 0  # right behind the bus
    assert counts["a3"] == 0  # beyond range
    # without the bus the pedestrian is seen
    alone = replace(state, agents=state.agents[1:])
    assert lidar_point_counts(world, alone, lidar_calibration())["a1"] > 0


def test_counts_fall_with_distance_and_are_deterministic(world):
    t = straight_time(world)
    near = lidar_point_counts(world, place_agents(world, t, [("car", 8.0, 0.0)], id_prefix="a"), lidar_calibration())["a0"]
    far = lidar_point_counts(world, place_agents(world, t, [("car", 30.0, 0.0)], id_prefix="a"), lidar_calibration())["a0"]
    assert near > 4 * far > 0
    state = world.state_at(3.0)
    a = lidar_point_counts(world, state, lidar_calibration())
    again = World(5)
    b = lidar_point_counts(again, again.state_at(3.0), lidar_calibration())
    assert a == b
    ego = state.ego_pose.translation[:2]
    assert any(v > 0 for v in a.values())
    for agent in state.agents:  # nothing beyond range
        if np.linalg.norm(agent.center[:2] - ego) > RANGE_M + 10:
            assert a[agent.instance_id] == 0


def test_sweep_round_trips_through_the_devkit_point_file(world, tmp_path):
    data_classes = pytest.importorskip("nuscenes.utils.data_classes")
    state = world.state_at(3.0)
    sweep = lidar_sweep(world, state, lidar_calibration())
    assert sweep.counts == lidar_point_counts(world, state, lidar_calibration())
    assert len(sweep.points) > 10_000 and sweep.points.dtype == np.float32
    ranges = np.linalg.norm(sweep.points[:, :3], axis=1)
    assert ranges.min() >= MIN_RANGE_M - 1e-4 and ranges.max() < RANGE_M
    assert set(np.unique(sweep.points[:, 4])) <= set(range(N_BEAMS)) and np.all(sweep.points[:, 3] == 0)
    path = tmp_path / "sweep.pcd.bin"
    write_pcd_bin(path, sweep.points)
    loaded = data_classes.LidarPointCloud.from_file(str(path))  # (4, N): x, y, z, intensity
    np.testing.assert_array_equal(loaded.points, sweep.points[:, :4].T)
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        write_pcd_bin(path, sweep.points[:, :3])
