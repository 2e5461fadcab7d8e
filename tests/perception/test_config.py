"""The model config loader: every numeric key range-checked, one message naming the key."""
from __future__ import annotations

import math

import pytest

from perception.checkpoint import load_checkpoint
from perception.config import check_ranges, model_config_from_dict, numeric_leaves, range_of
from perception.model import ModelConfig

SHIPPED = "perception/weights/bevstream.pt"


def test_every_numeric_key_has_a_range():
    missing = sorted({key for key, _ in numeric_leaves(ModelConfig()) if range_of(key) is None})
    assert missing == []


def test_the_defaults_and_the_shipped_weights_config_lie_within_their_ranges():
    check_ranges(ModelConfig())
    model_config_from_dict(load_checkpoint(SHIPPED)["config"]["model"])


@pytest.mark.parametrize("section, key, value", [
    ("detection", "score_threshold", math.nan),
    ("detection", "score_threshold", 2.0),
    ("detection", "max_detections", -1),
    ("detection", "nms_radius_m", [2, 2, 2, 3, 3, 2, 4, -0.5, 2, 1.5]),
    ("video", "push_distance_m", math.nan),
    ("video", "push_period_ms", 0.0),
    ("road", "threshold", math.inf),
    ("tracking", "score_track_weight", 1.5),
    ("grid", "resolution", 0.0),
])
def test_a_value_out_of_range_is_one_error_naming_its_key(section, key, value):
    with pytest.raises(ValueError, match=rf"^model\.{section}\b.*\b{key}\b.*(must|needs)") as err:
        model_config_from_dict({section: {key: value}})
    assert "\n" not in str(err.value)


def test_a_value_at_a_closed_bound_is_accepted():
    cfg = model_config_from_dict({"detection": {"score_threshold": 1.0, "nms_iou": 0.0}, "tracking": {"gate_m": 1e-3}})
    assert cfg.detection.score_threshold == 1.0 and cfg.detection.nms_iou == 0.0
