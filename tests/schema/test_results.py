"""The one ego -> global conversion of detections against the devkit's Box, under a pose with pitch."""
from __future__ import annotations

import numpy as np
from nuscenes.eval.common.utils import quaternion_yaw
from nuscenes.utils.data_classes import Box
from pyquaternion import Quaternion

from schema.messages import Pose
from schema.results import DetectionArrays


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
