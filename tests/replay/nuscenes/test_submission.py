"""The submission writer round-trips through our reader and the devkit's own loader."""
from __future__ import annotations

import math

import pytest

from replay.nuscenes.submission import detection_entry, read_submission, write_submission

pytest.importorskip("nuscenes")
from nuscenes.eval.common.loaders import load_prediction  # noqa: E402
from nuscenes.eval.detection.data_classes import DetectionBox  # noqa: E402


def _results():
    a = detection_entry("s1", [1.0, 2.0, 0.5], [1.9, 4.5, 1.6], [1.0, 0.0, 0.0, 0.0], [3.0, -1.0], "car", 0.9, "vehicle.moving")
    b = detection_entry("s1", [5.0, 2.0, 0.3], [0.4, 0.4, 0.7], [0.7071, 0.0, 0.0, 0.7071], [float("nan"), 0.0], "traffic_cone", 0.4)
    return {"s1": [a, b], "s2": []}


def test_round_trip_through_devkit_loader(tmp_path):
    path = write_submission(tmp_path / "results_nusc.json", _results())
    results, meta = read_submission(path)
    assert results == _results() and meta["use_camera"] is True
    boxes, meta2 = load_prediction(str(path), 500, DetectionBox)
    assert set(boxes.sample_tokens) == {"s1", "s2"} and len(boxes["s2"]) == 0
    car, cone = boxes["s1"]
    assert car == DetectionBox.deserialize(_results()["s1"][0])
    assert car.translation == (1.0, 2.0, 0.5) and car.velocity == (3.0, -1.0) and car.attribute_name == "vehicle.moving"
    assert cone.velocity == (0.0, 0.0)  # NaN velocity written as 0
    assert all(math.isfinite(v) for v in cone.velocity)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(detection_name="spaceship"), "detection_name"),
        (dict(attribute_name="vehicle.flying"), "attribute_name"),
        (dict(detection_score=float("nan")), "detection_score"),
        (dict(rotation=[1.0, 0.0, 0.0]), "rotation"),
    ],
)
def test_bad_boxes_are_rejected(kwargs, match):
    args = dict(sample_token="s", translation=[0, 0, 0], size=[1, 1, 1], rotation=[1, 0, 0, 0], velocity=[0, 0],
                detection_name="car", detection_score=0.5, attribute_name="")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        detection_entry(**args)


def test_box_under_wrong_sample_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="listed under"):
        write_submission(tmp_path / "r.json", {"s2": _results()["s1"]})
