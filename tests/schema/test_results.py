"""The one ego -> global conversion of detections against the devkit's Box, under a pose with pitch."""
from __future__ import annotations

import numpy as np
from nuscenes.eval.common.utils import quaternion_yaw
from nuscenes.utils.data_classes import Box
from pyquaternion import Quaternion

from schema.messages import Pose
from schema.results import DetectionArrays, Polyline


def test_to_global_matches_devkit_box():
    boxes = np.array([[10.0, -3.0, 0.8, 1.9, 4.6, 1.7, 0.3, 5.0, -1.0],
                      [-20.0, 7.5, 0.5, 0.7, 0.8, 1.8, -2.0, 0.4, 1.1],
                      [35.0, 1.0, 0.3, 0.4, 0.4, 1.0, 3.0, 0.0, 0.0]], np.float32)  # (3, 9) ego
    dets = DetectionArrays("ego", boxes, [0.9, 0.2, 0.6], [0, 5, 8], ["car", "pedestrian", "traffic_cone"])
    pose = Pose(np.array([600.0, 1700.0, 0.3]), Quaternion(axis=(0, 0, 1), angle=2.1) * Quaternion(axis=(1, 0, 0), angle=0.02))
    out = dets.to_global(pose)
    assert out.frame == "global" and out.names == dets.names and out.attributes == dets.attributes
    for b, g in zip(boxes.astype(np.float64), out.boxes.astype(np.float64)):
        ref = Box(b[:3], b[3:6], Quaternion(axis=(0, 0, 1), angle=b[6]), velocity=(b[7], b[8], 0.0))
        ref.rotate(pose.rotation)
        ref.translate(pose.translation)
        np.testing.assert_allclose(g[:3], ref.center, atol=2e-4)  # float32 at map coordinates
        np.testing.assert_allclose(g[3:6], ref.wlh, atol=1e-5)
        np.testing.assert_allclose(g[7:9], ref.velocity[:2], atol=1e-5)
        assert abs(np.angle(np.exp(1j * (g[6] - quaternion_yaw(ref.orientation))))) < 1e-5


def test_polylines_pickle_to_the_same_points():
    """Polyline.__reduce__ ships its points as raw bytes: the same float32 points come back, empty
    polylines included, and a whole TickResult round-trips."""
    import pickle

    rng = np.random.default_rng(0)
    for pts in (rng.normal(size=(7, 2)) * 30, np.zeros((0, 2))):
        line = Polyline("road_edge", pts)
        back = pickle.loads(pickle.dumps(line, protocol=5))
        assert back.cls == line.cls and back.points.dtype == np.float32 and back.points.shape == line.points.shape
        np.testing.assert_array_equal(back.points, line.points)
        assert back.points.flags.writeable  # a copy, not a view of the pickle's buffer
