"""Ground truth extraction against the devkit (real scene-0523) and on synthetic road / label files."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from pyquaternion import Quaternion

from lab.groundtruth import GroundTruth, boxes_to_global, global_to_ego_2d
from perception.grid import BEVGrid
from replay.layout import label_path, road_geometry_path
from schema.classes import DETECTION_NAMES
from schema.messages import Pose


@pytest.fixture(scope="module")
def nusc(real_scene_root):
    from nuscenes.nuscenes import NuScenes

    return NuScenes("v1.0-trainval", str(real_scene_root), verbose=False)


def _lidar_pose(nusc, sd_token: str) -> Pose:
    return Pose.from_record(nusc.get("ego_pose", nusc.get("sample_data", sd_token)["ego_pose_token"]))


def _devkit_ego_boxes(nusc, sd_token, grid):
    """The devkit's boxes for a sample_data (interpolated at sweeps), moved into the ego frame, detection classes only."""
    return _devkit_ego_boxes_at_pose(nusc, sd_token, _lidar_pose(nusc, sd_token), grid)


def _check_equal(gt, ref):
    assert set(gt.instance_tokens) == set(ref), "the same instances as the devkit"
    for row, label, inst in zip(gt.boxes, gt.labels, gt.instance_tokens):
        box, ref_label = ref[inst]
        assert label == ref_label
        np.testing.assert_allclose(row[:3], box.center, atol=1e-3)
        np.testing.assert_allclose(row[3:6], box.wlh, atol=1e-3)
        d = (row[6] - box.orientation.yaw_pitch_roll[0] + np.pi) % (2 * np.pi) - np.pi
        assert abs(d) < 1e-4


def test_keyframe_boxes_equal_devkit_boxes_in_ego(nusc):
    grid = BEVGrid()
    gt_reader = GroundTruth(nusc, grid)
    scene = nusc.scene[0]
    n_boxes = 0
    for sample in nusc.sample[:8]:
        sd = sample["data"]["LIDAR_TOP"]
        gt = gt_reader.boxes_at(scene["token"], sample["timestamp"], _lidar_pose(nusc, sd), sample_token=sample["token"])
        _check_equal(gt, _devkit_ego_boxes(nusc, sd, grid))
        n_boxes += len(gt)
        # velocity: the devkit's global velocity rotated into the ego frame
        pose = _lidar_pose(nusc, sd)
        for row, valid, inst in zip(gt.boxes, gt.velocity_valid, gt.instance_tokens):
            ann = next(a for a in sample["anns"] if nusc.get("sample_annotation", a)["instance_token"] == inst)
            v = nusc.box_velocity(ann)
            if np.all(np.isfinite(v)):
                assert valid
                np.testing.assert_allclose(row[7:9], (pose.rotation.inverse.rotate(v))[:2], atol=1e-4)
            else:
                assert not valid and np.all(row[7:9] == 0)
    assert n_boxes > 50, "the scene has plenty of annotated objects"


def test_sweep_boxes_equal_devkit_interpolation(nusc):
    grid = BEVGrid()
    gt_reader = GroundTruth(nusc, grid)
    scene = nusc.scene[0]
    sweeps = [sd for sd in nusc.sample_data if sd["channel"] == "LIDAR_TOP" and not sd["is_key_frame"]]
    assert len(sweeps) > 100
    for sd in sweeps[5:200:17]:
        pose = _lidar_pose(nusc, sd["token"])
        gt = gt_reader.boxes_at(scene["token"], sd["timestamp"], pose)
        _check_equal(gt, _devkit_ego_boxes(nusc, sd["token"], grid))


def test_interpolation_at_keyframe_time_equals_keyframe(nusc):
    gt_reader = GroundTruth(nusc)
    scene = nusc.scene[0]
    for sample in nusc.sample[3:6]:
        pose = _lidar_pose(nusc, sample["data"]["LIDAR_TOP"])
        a = gt_reader.boxes_at(scene["token"], sample["timestamp"], pose)  # by time, no sample token
        b = gt_reader.boxes_at(scene["token"], sample["timestamp"], pose, sample_token=sample["token"])
        assert a.instance_tokens == b.instance_tokens
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-6)


def test_min_points_drops_empty_boxes(nusc):
    scene = nusc.scene[0]
    sample = nusc.sample[10]
    pose = _lidar_pose(nusc, sample["data"]["LIDAR_TOP"])
    all_boxes = GroundTruth(nusc).boxes_at(scene["token"], sample["timestamp"], pose, sample["token"])
    visible = GroundTruth(nusc, min_points=1).boxes_at(scene["token"], sample["timestamp"], pose, sample["token"])
    assert len(visible) == int((all_boxes.num_points >= 1).sum()) < len(all_boxes)


def test_boxes_to_global_round_trip(nusc):
    gt_reader = GroundTruth(nusc)
    scene = nusc.scene[0]
    sample = nusc.sample[4]
    pose = _lidar_pose(nusc, sample["data"]["LIDAR_TOP"])
    gt = gt_reader.boxes_at(scene["token"], sample["timestamp"], pose, sample["token"])
    by_inst = {nusc.get("sample_annotation", a)["instance_token"]: nusc.get("sample_annotation", a) for a in sample["anns"]}
    for box, inst in zip(boxes_to_global(gt.boxes, pose), gt.instance_tokens):
        ann = by_inst[inst]
        np.testing.assert_allclose(box.center, ann["translation"], atol=1e-3)
        d = box.orientation.yaw_pitch_roll[0] - Quaternion(ann["rotation"]).yaw_pitch_roll[0]
        assert abs((d + np.pi) % (2 * np.pi) - np.pi) < 0.02  # the ego's pitch/roll is dropped on the way back


def test_real_scene_has_no_road_or_labels(nusc):
    gt_reader = GroundTruth(nusc)
    sample = nusc.sample[0]
    assert gt_reader.road_at(nusc.scene[0]["name"], _lidar_pose(nusc, sample["data"]["LIDAR_TOP"])) is None
    assert gt_reader.seg_label(sample["data"]["CAM_FRONT"]) is None


def test_road_polylines_to_ego_and_clipped(tmp_path):
    grid = BEVGrid()
    path = road_geometry_path(tmp_path, "scene-x")
    path.parent.mkdir(parents=True)
    # a straight divider along global x, 300 m long; an edge entirely out of range
    json.dump(
        {
            "scene": "scene-x",
            "frame": "global",
            "lane_divider": [{"points": [[900.0, 2000.0], [1200.0, 2000.0]], "dashed": True}],
            "road_edge": [{"points": [[0.0, 0.0], [10.0, 0.0]]}],
        },
        open(path, "w"),
    )
    reader = GroundTruth(SimpleNamespace(dataroot=str(tmp_path), scene=[]), grid)
    yaw = 0.3
    pose = Pose(np.array([1000.0, 1995.0, 0.5]), Quaternion(axis=[0, 0, 1], angle=yaw))
    road = reader.road_at("scene-x", pose)
    assert road["road_edge"] == []
    (line,) = road["lane_divider"]
    # reference: the full inverse pose applied to the 3D points (planar pose -> identical)
    ref = pose.inverse().transform_points(np.array([[900.0, 2000.0, 0.0], [1200.0, 2000.0, 0.0]]))[:, :2]
    direction = (ref[1] - ref[0]) / np.linalg.norm(ref[1] - ref[0])
    for p in line:  # every point lies on the reference line and inside the grid
        off = p - ref[0]
        assert abs(off[0] * direction[1] - off[1] * direction[0]) < 1e-3
        assert grid.x_min - 1e-3 <= p[0] <= grid.x_max + 1e-3 and grid.y_min - 1e-3 <= p[1] <= grid.y_max + 1e-3
    assert np.linalg.norm(line[-1] - line[0]) > 90  # crosses the whole 102.4 m window (slanted)
    np.testing.assert_allclose(global_to_ego_2d(np.array([[1000.0, 1995.0]]), pose), [[0.0, 0.0]], atol=1e-9)


def test_seg_label_read_from_layout(tmp_path):
    from PIL import Image

    filename = "samples/CAM_FRONT/a.jpg"
    path = label_path(tmp_path, filename)
    path.parent.mkdir(parents=True)
    labels = np.random.default_rng(0).integers(0, 11, size=(9, 16)).astype(np.uint8)
    Image.fromarray(labels, mode="L").save(path)
    nusc = SimpleNamespace(dataroot=str(tmp_path), scene=[], get=lambda table, token: {"filename": filename})
    np.testing.assert_array_equal(GroundTruth(nusc).seg_label("tok"), labels)


# ---- on the simulator's export (sim_dataset: tests/replay/conftest.py) ----------------------------------


def test_sim_export_ground_truth(sim_dataset, sim_nusc):
    from replay.nuscenes.source import NuScenesSource
    from schema.classes import SEG_CLASSES

    grid = BEVGrid()
    reader = GroundTruth(sim_nusc, grid)
    src = NuScenesSource(sim_dataset.dataroot, sim_dataset.version, scenes=[sim_nusc.scene[0]["name"]])
    road_json = json.loads(road_geometry_path(sim_dataset.dataroot, sim_nusc.scene[0]["name"]).read_text())
    checked_sweeps = 0
    for fs in src.frame_sets():
        gt = reader.for_frame_set(fs)
        # boxes: keyframes as the devkit's own, sweeps as the devkit's interpolation at the reference camera's time
        if fs.is_keyframe:
            lidar = sim_nusc.get("sample", fs.sample_token)["data"]["LIDAR_TOP"]
            _check_equal(gt.boxes, _devkit_ego_boxes(sim_nusc, lidar, grid))
        elif checked_sweeps < 6:
            ref_cam = min(fs.cameras, key=lambda c: c.timestamp_us)
            if ref_cam.timestamp_us == fs.timestamp_us:
                _check_equal(reader.boxes_at(sim_nusc.scene[0]["token"], fs.timestamp_us, fs.ego_to_global),
                             _devkit_ego_boxes_at_pose(sim_nusc, ref_cam.sample_data_token, fs.ego_to_global, grid))
                checked_sweeps += 1
        # road: polylines inside the grid, each point back in global lies on a polyline of the file
        assert set(gt.road) == {"lane_divider", "road_edge"} and sum(len(v) for v in gt.road.values()) > 0
        for cls, lines in gt.road.items():
            ref = [np.asarray(item["points"]) for item in road_json[cls]]
            for line in lines[:3]:
                assert np.all(np.abs(line) <= 51.2 + 1e-3)
                back = _ego_to_global_2d(line, fs.ego_to_global)
                for p in back[:: max(1, len(back) // 4)]:
                    assert min(_dist_to_polyline(p, r) for r in ref) < 1e-2
        # labels: one per camera, image-sized, values in SEG_CLASSES
        for cam, label in zip(fs.cameras, gt.seg_labels):
            assert label is not None and label.shape == cam.image.shape[:2] and int(label.max()) < len(SEG_CLASSES)
        if fs.frame_id > 30:
            break
    assert checked_sweeps > 0


def _devkit_ego_boxes_at_pose(nusc, sd_token, pose, grid):
    from nuscenes.eval.detection.utils import category_to_detection_name

    out = {}
    for box in nusc.get_boxes(sd_token):
        name = category_to_detection_name(box.name)
        if name is None:
            continue
        box.translate(-pose.translation)
        box.rotate(pose.rotation.inverse)
        if grid.x_min <= box.center[0] < grid.x_max and grid.y_min <= box.center[1] < grid.y_max:
            out[nusc.get("sample_annotation", box.token)["instance_token"]] = (box, DETECTION_NAMES.index(name))
    return out


def _ego_to_global_2d(points, pose):
    yaw = pose.yaw
    c, s = np.cos(yaw), np.sin(yaw)
    return np.stack([c * points[:, 0] - s * points[:, 1], s * points[:, 0] + c * points[:, 1]], 1) + pose.translation[:2]


def _dist_to_polyline(p, line):
    a, b = line[:-1], line[1:]
    d = b - a
    t = np.clip(((p - a) * d).sum(1) / np.maximum((d * d).sum(1), 1e-12), 0, 1)
    return float(np.min(np.linalg.norm(a + t[:, None] * d - p, axis=1)))
