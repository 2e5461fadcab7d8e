"""Pictures: a box straight ahead of the car is drawn where the devkit projects it in CAM_FRONT,
and not in CAM_BACK; the BEV picture draws it ahead of the ego car."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
from nuscenes.utils.geometry_utils import view_points

from lab.viz import box_corners_ego, draw_bev, draw_camera
from replay.sim.rig import camera_rig
from schema.results import DetectionArrays, TickResult
from tests.runtime.fakes import make_frame_set


def _setup():
    rig = camera_rig(320, 180)
    fs = make_frame_set(0, size=(180, 320))
    cams = tuple(replace(c, image=np.zeros((180, 320, 3), np.uint8), intrinsic=rig[c.channel].intrinsic,
                         sensor_to_ego=rig[c.channel].sensor_to_ego) for c in fs.cameras)
    fs = replace(fs, cameras=cams)
    box = np.array([[15.0, 0.0, 0.8, 2.0, 4.5, 1.6, 0.0, 0.0, 0.0]], np.float32)
    dets = DetectionArrays("ego", box, [0.9], [0], ["car"])
    res = TickResult(0, fs.ego_to_global, dets, dets.to_global(fs.ego_to_global), (), (),
                     fs.channels, np.zeros((6, 4, 4), np.uint8), (), frame_id=0, scene=fs.scene, timestamp_us=0)
    return fs, res, box[0]


def test_box_drawn_where_the_devkit_projects_it():
    fs, res, box = _setup()
    cam = fs.camera("CAM_FRONT")
    corners = cam.sensor_to_ego.inverse().transform_points(box_corners_ego(box).T).T
    uv = view_points(corners, cam.intrinsic, normalize=True)[:2]
    img = np.asarray(draw_camera(fs, "CAM_FRONT", res, width=320))
    drawn = np.argwhere(img[20:].sum(axis=2) > 0) + [20, 0]  # below the channel label
    assert len(drawn) > 20
    # Drawn pixels lie within the projected corners' bounding box (lines are 2 px wide).
    assert drawn[:, 1].min() >= uv[0].min() - 3 and drawn[:, 1].max() <= uv[0].max() + 3
    assert drawn[:, 0].min() >= uv[1].min() - 3 and drawn[:, 0].max() <= uv[1].max() + 3
    back = np.asarray(draw_camera(fs, "CAM_BACK", res, width=320))
    assert back[20:].sum() == 0  # the box is behind CAM_BACK: nothing drawn


def test_bev_draws_the_box_ahead_of_the_ego_car():
    _, res, _ = _setup()
    img = np.asarray(draw_bev(res, extent_m=51.2, size=512)).astype(int)
    # Car colour (palette[0]) pixels: x = 15 m ahead -> rows above the centre by ~15 * 5 px.
    ys, xs = np.nonzero((img[..., 0] == 255) & (img[..., 1] == 158) & (img[..., 2] == 0))
    ys, xs = ys[ys > 120], xs[ys > 120]  # skip the legend
    assert len(ys) and abs(ys.mean() - (256 - 15 * 5)) < 8 and abs(xs.mean() - 256) < 8


def test_bev_arrow_points_where_the_velocity_takes_the_box():
    """A car at 15 m driving at 10 m/s to the left (+y) gets an arrow ending 10 m to its left; parked, none."""
    _, res, box = _setup()
    moving = box.copy()
    moving[7:9] = [0.0, 10.0]
    dets = DetectionArrays("ego", moving[None], [0.9], [0], ["car"])
    img = np.asarray(draw_bev(replace(res, detections_ego=dets), extent_m=51.2, size=512)).astype(int)
    arrow = (img[..., 0] == 180) & (img[..., 1] == 255) & (img[..., 2] == 180)
    ys, xs = np.nonzero(arrow)
    assert len(ys) and abs(ys.mean() - (256 - 15 * 5)) < 3  # along the row of the box's centre
    assert abs(xs.min() - (256 - 10 * 5)) <= 3 and xs.max() <= 256 + 2  # from it to 10 m left of it (y left)
    still = np.asarray(draw_bev(res, extent_m=51.2, size=512)).astype(int)
    assert not ((still[..., 0] == 180) & (still[..., 1] == 255) & (still[..., 2] == 180)).any()
