"""Attributes from speed: the naming rule."""
from __future__ import annotations

import numpy as np
import pytest

from schema.attributes import (
    AttributeConfig,
    attribute_name,
    attribute_names,
)


def test_attribute_name_by_group_and_threshold():
    cfg = AttributeConfig(vehicle_moving_mps=1.0, pedestrian_moving_mps=0.3, cycle_moving_mps=2.0)
    assert attribute_name("truck", 1.01, cfg) == "vehicle.moving"
    assert attribute_name("truck", 1.0, cfg) == "vehicle.parked"  # at the threshold: still
    assert attribute_name("pedestrian", 0.5, cfg) == "pedestrian.moving"
    assert attribute_name("motorcycle", 1.5, cfg) == "cycle.without_rider"
    assert attribute_name("barrier", 9.0, cfg) == attribute_name("traffic_cone", 0.0, cfg) == ""
    assert attribute_names(["car", "car", "barrier"], np.array([[0.9, -0.9], [0.6, 0.0], [5, 5]]), cfg) == (
        "vehicle.moving", "vehicle.parked", "")  # the speed is the velocity's norm (1.27 and 0.6 m/s)
    assert attribute_name("car", 0.3) == "vehicle.moving"  # the defaults: CenterPoint's 0.2 m/s


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_attribute_config_rejects_a_bad_speed(bad):
    with pytest.raises(ValueError, match="cycle_moving_mps"):
        AttributeConfig(cycle_moving_mps=bad)
