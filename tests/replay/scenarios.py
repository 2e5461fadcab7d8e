"""Hand-placed test scenes in the simulated world: a straight stretch of road and agents put on it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from replay.sim.agent_specs import CLASS_SPECS
from replay.sim.world import AgentState, yaw_quaternion

_ATTRIBUTES = {"pedestrian": "pedestrian.standing", "traffic_cone": "", "barrier": "",
               "bicycle": "cycle.with_rider", "motorcycle": "cycle.with_rider"}


def straight_time(world) -> float:
    """A time when the ego drives straight for the next seconds (objects placed ahead stay on the road)."""
    for t in np.arange(0.0, 30.0, 0.5):
        if all(abs(world.state_at(t + dt).ego_yaw_rate) < 1e-3 for dt in (0.0, 1.0, 2.0)):
            return float(t)
    pytest.fail("the seeded world has no straight stretch in its first 30 s: pick another seed for this test")


def place_agents(world, t, placements, id_prefix: str = "test-"):
    """The world's state at t with only the given agents: (name, metres ahead, metres left[, relative yaw])."""
    base = world.state_at(t)
    pose = base.ego_pose
    agents = []
    for k, (name, fwd, left, *ryaw) in enumerate(placements):
        size = np.array(CLASS_SPECS[name][1])
        c = pose.transform_points(np.array([[fwd, left, 0.0]]))[0]
        c[2] = size[2] / 2
        agents.append(AgentState(f"{id_prefix}{k}", CLASS_SPECS[name][0], name, size, c,
                                 yaw_quaternion(pose.yaw + (ryaw[0] if ryaw else 0.0)), np.zeros(3),
                                 _ATTRIBUTES.get(name, "vehicle.parked"), (200, 40, 40)))
    return replace(base, agents=tuple(agents))
