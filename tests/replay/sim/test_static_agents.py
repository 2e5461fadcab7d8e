"""Static objects: deterministic by seed, standing on the ground, away from the ego's start."""
from __future__ import annotations

import numpy as np

from replay.sim.agent_specs import CLASS_SPECS
from replay.sim.world import World


def test_statics_are_deterministic_on_the_ground_and_clear_of_the_ego():
    a, b = World(5), World(5)
    assert len(a.traffic.statics) > 0
    for x, y in zip(a.traffic.statics, b.traffic.statics):
        assert x.name == y.name and x.attribute == y.attribute
        np.testing.assert_array_equal(x.center, y.center)
    ego = a.state_at(0.0).ego_pose.translation[:2]
    for st in a.traffic.statics:
        assert st.name in CLASS_SPECS
        assert st.center[2] == st.size[2] / 2  # on flat ground
        assert np.hypot(*(st.center[:2] - ego)) > 2.0
