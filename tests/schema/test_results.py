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
    polylines included."""
    import pickle

    rng = np.random.default_rng(0)
    for pts in (rng.normal(size=(7, 2)) * 30, np.zeros((0, 2))):
        line = Polyline("road_edge", pts)
        back = pickle.loads(pickle.dumps(line, protocol=5))
        assert back.cls == line.cls and back.points.dtype == np.float32 and back.points.shape == line.points.shape
        np.testing.assert_array_equal(back.points, line.points)
        assert back.points.flags.writeable  # a copy, not a view of the pickle's buffer


def _random_tick(rng, n_boxes: int, n_lines: int, track_ids: bool):
    from schema.messages import StageTiming
    from schema.results import TickResult

    names = tuple(rng.choice(["car", "pedestrian", "barrier", "bicycle"], n_boxes).tolist())
    boxes = rng.normal(size=(n_boxes, 9)).astype(np.float32)
    if n_boxes:
        boxes[0, 7] = np.nan  # a NaN comes back as NaN
    ids = rng.integers(0, 1000, n_boxes) if track_ids else None
    dets = DetectionArrays("ego", boxes, rng.random(n_boxes), rng.integers(0, 10, n_boxes), names, None, ids)
    pose = Pose(np.array([600.0, 1700.0, 0.3]), Quaternion(axis=(0, 0, 1), angle=2.1))
    lines = tuple(Polyline(str(rng.choice(["lane_divider", "road_edge"])), rng.normal(size=(int(rng.integers(0, 6)), 2)) * 30)
                  for _ in range(n_lines))
    return TickResult(7, pose, dets, dets.to_global(pose), lines, tuple(p.to_global(pose) for p in lines),
                      ("CAM_FRONT", "CAM_BACK"), rng.integers(0, 9, (2, 4, 5)).astype(np.uint8), ("CAM_FRONT_LEFT",),
                      new_scene=True, frame_id=3, scene="scene-1", timestamp_us=11, sample_token="tok",
                      timings=(StageTiming("bev", 1, 2),))


def _assert_same_tick(a, b) -> None:
    from dataclasses import fields

    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, DetectionArrays):
            for g in fields(x):
                u, v = getattr(x, g.name), getattr(y, g.name)
                if isinstance(u, np.ndarray):
                    assert u.dtype == v.dtype
                    np.testing.assert_array_equal(u, v)
                else:
                    assert u == v, g.name
        elif f.name.startswith("polylines"):
            assert [p.cls for p in x] == [p.cls for p in y]
            for p, q in zip(x, y):
                assert q.points.dtype == np.float32 and q.points.flags.writeable
                np.testing.assert_array_equal(p.points, q.points)
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y)
        elif isinstance(x, Pose):
            np.testing.assert_array_equal(x.matrix, y.matrix)
        else:
            assert x == y, f.name


def test_tick_result_pickles_to_the_same_message():
    """A TickResult crosses processes packed (TickResult.__reduce__: polylines as three arrays, class names and
    attributes as a vocabulary + index): every field comes back equal, through pickle and through Ray's own
    serialiser (cloudpickle, out-of-band buffers), with and without boxes, lines and track ids."""
    import pickle

    import ray.cloudpickle as cloudpickle

    rng = np.random.default_rng(1)
    for n_boxes, n_lines, ids in ((0, 0, False), (1, 1, True), (40, 25, True), (200, 80, False)):
        tick = _random_tick(rng, n_boxes, n_lines, ids)
        _assert_same_tick(tick, pickle.loads(pickle.dumps(tick, protocol=5)))
        buffers: list = []
        data = cloudpickle.dumps(tick, protocol=5, buffer_callback=buffers.append)
        _assert_same_tick(tick, cloudpickle.loads(data, buffers=buffers))
