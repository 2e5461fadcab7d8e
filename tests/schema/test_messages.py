"""Pose and message invariants, checked against the devkit's transform_matrix."""
import numpy as np
import pytest
from nuscenes.utils.geometry_utils import transform_matrix
from pyquaternion import Quaternion

from schema.messages import CAMERA_CHANNELS, CameraFrame, EgoKinematics, FrameSet, Pose, order_cameras


def random_pose(rng: np.random.Generator) -> Pose:
    return Pose(rng.normal(size=3) * 10, Quaternion(rng.normal(size=4)).normalised)


def test_pose_matrix_matches_devkit():
    rng = np.random.default_rng(0)
    for _ in range(5):
        p = random_pose(rng)
        np.testing.assert_allclose(p.matrix, transform_matrix(p.translation, p.rotation), atol=1e-12)
        np.testing.assert_allclose(p.inverse().matrix, transform_matrix(p.translation, p.rotation, inverse=True), atol=1e-9)


def test_pose_compose_and_inverse_round_trip():
    rng = np.random.default_rng(1)
    a, b = random_pose(rng), random_pose(rng)
    np.testing.assert_allclose((a @ b).matrix, a.matrix @ b.matrix, atol=1e-9)
    np.testing.assert_allclose((a @ a.inverse()).matrix, np.eye(4), atol=1e-9)
    pts = rng.normal(size=(7, 3))
    np.testing.assert_allclose(a.inverse().transform_points(a.transform_points(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(Pose.from_matrix(a.matrix).matrix, a.matrix, atol=1e-9)


def test_pose_record_round_trip_and_finiteness():
    p = Pose.from_record({"translation": [1.0, 2.0, 3.0], "rotation": [1.0, 0.0, 0.0, 0.0]})
    assert Pose.from_record(p.to_record()).matrix.tolist() == p.matrix.tolist()
    assert p.is_finite()
    assert not Pose(np.array([np.nan, 0.0, 0.0]), Quaternion()).is_finite()


def test_frame_set_accessors():
    frames = [
        CameraFrame(channel=ch, frame_id=0, timestamp_us=1000 + 10 * i, image=np.zeros((2, 3, 3), np.uint8),
                    intrinsic=np.eye(3), sensor_to_ego=Pose.identity(), ego_to_global=Pose.identity(), scene="s")
        for i, ch in enumerate(reversed(CAMERA_CHANNELS[:4]))
    ]
    fs = FrameSet(frame_id=0, scene="s", timestamp_us=1000, cameras=order_cameras(frames),
                  missing=CAMERA_CHANNELS[4:], ego_to_global=Pose.identity(), kinematics=EgoKinematics.zero())
    assert fs.channels == CAMERA_CHANNELS[:4]
    assert fs.degraded and fs.oldest_timestamp_us == 1000
    assert fs.camera("CAM_BACK").size == (3, 2)
    with pytest.raises(KeyError, match="CAM_FRONT_LEFT"):
        fs.camera("CAM_FRONT_LEFT")
    with pytest.raises(ValueError, match="unknown camera channel"):
        order_cameras([frames[0].__class__(**{**frames[0].__dict__, "channel": "CAM_TOP"})])


def test_pose_pickles_to_the_same_floats():
    """A pose crosses processes as seven floats (Pose.__reduce__): exactly the same pose comes back,
    non-finite values included (a NaN pose must still be caught by the input checks downstream)."""
    import pickle

    rng = np.random.default_rng(3)
    for p in (random_pose(rng), Pose(np.array([np.nan, 1.0, np.inf]), Quaternion(1.0, 0.0, 0.0, 0.0))):
        back = pickle.loads(pickle.dumps(p, protocol=5))
        assert back.translation.dtype == np.float64 and back.translation.shape == (3,)
        np.testing.assert_array_equal(back.translation, p.translation)
        np.testing.assert_array_equal(back.rotation.elements, p.rotation.elements)
        assert back.is_finite() == p.is_finite()
