"""Table rows of the exporter on hand-made world states, loaded and queried through the devkit."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pyquaternion import Quaternion

from replay.export.map_mask import drivable_mask, road_geometry_record, write_map_mask
from replay.export.tables import (
    KeyframeTruth,
    SceneInfo,
    SensorFrame,
    make_token,
    map_token,
    scene_tables,
    static_tables,
    visibility_token,
)
from replay.export.splits import scene_names
from schema.messages import Pose

nuscenes = pytest.importorskip("nuscenes")
from nuscenes.nuscenes import NuScenes  # noqa: E402

TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
          "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility")


@dataclass(frozen=True)
class Agent:
    instance_id: str
    category: str
    detection_name: str
    size: np.ndarray
    center: np.ndarray
    rotation: Quaternion
    velocity: np.ndarray
    attribute: str


@dataclass(frozen=True)
class State:
    time_s: float
    ego_pose: Pose
    agents: tuple


@dataclass(frozen=True)
class Calib:
    channel: str
    sensor_to_ego: Pose
    intrinsic: np.ndarray | None


@dataclass(frozen=True)
class Line:
    points: np.ndarray
    kind: str
    dashed: bool = False


EGO_V = np.array([10.0, 0.0, 0.0])
CAR_V = np.array([5.0, 1.0, 0.0])
FAR_V = np.array([-40.0, 0.0, 0.0])  # drives away behind the ego: leaves the 60 m radius


def state_at(t: float) -> State:
    ego = Pose(np.array([200.0, 100.0, 0.0]) + EGO_V * t, Quaternion(axis=[0, 0, 1], angle=0.0))
    car = Agent("car-1", "vehicle.car", "car", np.array([1.9, 4.5, 1.6]), np.array([220.0, 103.0, 0.8]) + CAR_V * t,
                Quaternion(axis=[0, 0, 1], angle=0.2), CAR_V, "vehicle.moving")
    ped = Agent("ped-1", "human.pedestrian.adult", "pedestrian", np.array([0.6, 0.6, 1.7]), np.array([230.0, 95.0, 0.85]),
                Quaternion(), np.zeros(3), "pedestrian.standing")
    far = Agent("far-1", "vehicle.truck", "truck", np.array([2.5, 8.0, 3.0]), np.array([170.0, 100.0, 1.5]) + FAR_V * t,
                Quaternion(), FAR_V, "vehicle.moving")
    cone = Agent("cone-1", "movable_object.trafficcone", "traffic_cone", np.array([0.4, 0.4, 0.7]),
                 np.array([215.0, 108.0, 0.35]), Quaternion(), np.zeros(3), "")
    return State(t, ego, (car, ped, far, cone))


def build_scene(n_kf: int = 4):
    start = 1_600_000_000_000_000
    calibs = {
        "CAM_FRONT": Calib("CAM_FRONT", Pose(np.array([1.7, 0, 1.5]), Quaternion([0.5, -0.5, 0.5, -0.5])),
                           np.array([[400.0, 0, 200], [0, 400, 112], [0, 0, 1]])),
        "LIDAR_TOP": Calib("LIDAR_TOP", Pose(np.array([1.0, 0, 1.8]), Quaternion()), None),
    }
    frames, keyframes = [], []
    for k in range(n_kf):
        t_kf = 0.5 * k
        for c in range(6):  # camera at 12 Hz, 10 ms before the lidar cycle time
            ts = start + int(round((t_kf + c / 12.0) * 1e6)) - 10_000
            if k == n_kf - 1 and c > 0:
                break
            key = c == 0
            folder = "samples" if key else "sweeps"
            frames.append(SensorFrame("CAM_FRONT", ts, state_at((ts - start) / 1e6).ego_pose, key,
                                      f"{folder}/CAM_FRONT/log__CAM_FRONT__{ts}.jpg", "jpg", 400, 225))
        ts = start + int(round(t_kf * 1e6))
        st = state_at(t_kf)
        frames.append(SensorFrame("LIDAR_TOP", ts, st.ego_pose, True, f"samples/LIDAR_TOP/log__LIDAR_TOP__{ts}.pcd.bin", "pcd"))
        keyframes.append(KeyframeTruth(ts, st, {"car-1": 120, "ped-1": 15, "far-1": 3}, {"car-1": 0.95, "ped-1": 0.5, "far-1": 0.1}))
    info = SceneInfo("seed7/scene0", "scene-0103", "hand-made", "log", "2020-09-13", "bevstream-sim",
                     f"maps/{map_token('seed7/scene0')}.png")
    return info, calibs, frames, keyframes


@pytest.fixture(scope="module")
def hand_made_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("handmade")
    info, calibs, frames, keyframes = build_scene()
    tables = static_tables([("CAM_FRONT", "camera"), ("LIDAR_TOP", "lidar")])
    tables.update(scene_tables(info, calibs, frames, keyframes))
    (root / "v1.0-mini").mkdir()
    for name in TABLES:
        (root / "v1.0-mini" / f"{name}.json").write_text(json.dumps(tables[name]))
    write_map_mask(root / info.map_filename, [Line(np.array([[0.0, 100.0], [400.0, 100.0]]), "lane_divider")])
    return root


def test_all_tables_present_and_devkit_loads(hand_made_root):
    nusc = NuScenes("v1.0-mini", str(hand_made_root), verbose=False)
    assert len(nusc.scene) == 1 and nusc.scene[0]["nbr_samples"] == 4
    sample = nusc.get("sample", nusc.scene[0]["first_sample_token"])
    assert set(sample["data"]) == {"CAM_FRONT", "LIDAR_TOP"}
    # The devkit's own ego-pose lookup for the evaluation goes through the LIDAR_TOP keyframe.
    pose = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])
    np.testing.assert_allclose(pose["translation"], [200.0, 100.0, 0.0])
    # Mask opens where the devkit expects it, drivable on the lane divider, not 20 m away.
    mask = nusc.get("map", nusc.log[0]["map_token"])["mask"]
    assert mask.is_on_mask(np.array([100.0]), np.array([100.0]))[0]
    assert not mask.is_on_mask(np.array([100.0]), np.array([120.0]))[0]


def test_instance_tracks_and_box_velocity(hand_made_root):
    nusc = NuScenes("v1.0-mini", str(hand_made_root), verbose=False)
    by_cat = {nusc.get("category", i["category_token"])["name"]: i for i in nusc.instance}
    car = by_cat["vehicle.car"]
    assert car["nbr_annotations"] == 4
    # Walk the prev/next chain from the first to the last annotation.
    chain, tok = [], car["first_annotation_token"]
    while tok:
        chain.append(tok)
        tok = nusc.get("sample_annotation", tok)["next"]
    assert len(chain) == 4 and chain[-1] == car["last_annotation_token"]
    for tok in chain:  # constant-velocity agents: the devkit's finite differences recover it
        np.testing.assert_allclose(nusc.box_velocity(tok), CAR_V, atol=1e-3)
    # The truck leaves the 60 m radius: 170 - 40 t vs ego 200 + 10 t -> 30 + 50 t > 60 after 0.6 s.
    truck = by_cat["vehicle.truck"]
    assert truck["nbr_annotations"] == 2
    ann = nusc.get("sample_annotation", truck["first_annotation_token"])
    assert ann["num_lidar_pts"] == 3 and ann["visibility_token"] == "1"
    assert nusc.get("attribute", ann["attribute_tokens"][0])["name"] == "vehicle.moving"
    cone = nusc.get("sample_annotation", by_cat["movable_object.trafficcone"]["first_annotation_token"])
    assert cone["attribute_tokens"] == [] and cone["num_lidar_pts"] == 0  # nothing hit it


def test_sample_data_chains_and_sweeps_point_to_next_sample(hand_made_root):
    nusc = NuScenes("v1.0-mini", str(hand_made_root), verbose=False)
    samples = {s["token"]: s["timestamp"] for s in nusc.sample}
    cams = sorted((r for r in nusc.sample_data if r["channel"] == "CAM_FRONT"), key=lambda r: r["timestamp"])
    assert len(cams) == 3 * 6 + 1 and sum(r["is_key_frame"] for r in cams) == 4
    for a, b in zip(cams, cams[1:]):
        assert a["next"] == b["token"] and b["prev"] == a["token"]
    for r in cams:
        if not r["is_key_frame"]:
            assert samples[r["sample_token"]] > r["timestamp"]
        ego = nusc.get("ego_pose", r["ego_pose_token"])
        assert ego["timestamp"] == r["timestamp"]
        t = (r["timestamp"] - 1_600_000_000_000_000) / 1e6
        np.testing.assert_allclose(ego["translation"][0], 200.0 + 10.0 * t, atol=1e-5)


def test_tokens_are_deterministic_and_distinct():
    a = scene_tables(*build_scene())
    b = scene_tables(*build_scene())
    assert json.dumps(a) == json.dumps(b)
    tokens = [r["token"] for rows in a.values() for r in rows if "token" in r]
    assert len(tokens) - len(a["ego_pose"]) == len(set(tokens))  # ego_pose shares sample_data tokens
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in tokens)
    assert make_token("x", 1) != make_token("x", 2)


def test_unknown_category_is_rejected():
    info, calibs, frames, keyframes = build_scene()
    bad = Agent("odd", "vehicle.spaceship", "car", np.ones(3), np.array([205.0, 100.0, 0.5]), Quaternion(), np.zeros(3), "")
    kf0 = keyframes[0]
    keyframes[0] = KeyframeTruth(kf0.timestamp_us, State(0.0, kf0.state.ego_pose, kf0.state.agents + (bad,)), {}, {})
    with pytest.raises(ValueError, match="vehicle.spaceship"):
        scene_tables(info, calibs, frames, keyframes)


@pytest.mark.parametrize("fraction,token", [(0.0, "1"), (0.39, "1"), (0.4, "2"), (0.59, "2"), (0.6, "3"), (0.8, "4"), (1.0, "4")])
def test_visibility_bins(fraction, token):
    assert visibility_token(fraction) == token


def test_scene_names_come_from_devkit_splits():
    from nuscenes.utils import splits

    names = scene_names("v1.0-mini", 10)
    assert [n for n, s in names if s == "train"] == splits.mini_train
    assert [n for n, s in names if s == "val"] == splits.mini_val
    assert scene_names("v1.0-mini", 2) == [(splits.mini_train[0], "train"), (splits.mini_val[0], "val")]
    assert all(n in splits.val for n, _ in scene_names("v1.0-trainval", 5, "val"))
    with pytest.raises(ValueError, match="v1.0-trainval"):
        scene_names("v1.0-mini", 11)


def test_map_mask_pixel_convention_and_road_record():
    lines = [Line(np.array([[10.0, 5.0], [30.0, 5.0]]), "lane_divider", True), Line(np.array([[10.0, 8.5], [30.0, 8.5]]), "road_edge")]
    mask = drivable_mask(lines)
    h = mask.shape[0]
    assert mask[int(h - 5.0 / 0.1), int(20.0 / 0.1)] == 255  # on the divider
    assert mask[int(h - 5.0 / 0.1) - 30, int(20.0 / 0.1)] == 255  # 3 m to its left: still a lane
    assert mask[int(h - 5.0 / 0.1), int(45.0 / 0.1)] == 0  # past the road's end
    rec = road_geometry_record("scene-x", lines)
    assert rec["lane_divider"][0]["dashed"] is True and len(rec["road_edge"]) == 1


def test_ground_raster_mask_matches_devkit_map_mask(tmp_path):
    from nuscenes.utils.map_mask import MapMask

    from replay.export.map_mask import drivable_mask_from_ground, write_mask_png

    material = np.zeros((200, 300), np.uint8)  # 0.2 m cells from (5, 10): covers x 5..65, y 10..50
    material[50:100, :] = 1  # road: y in [20, 30)
    material[70:72, 100:200] = 2  # a marking on it
    mask = drivable_mask_from_ground(material, (5.0, 10.0), 0.2, (1, 2))
    write_mask_png(tmp_path / "m.png", mask)
    mm = MapMask(str(tmp_path / "m.png"), resolution=0.1)
    on = mm.is_on_mask(np.array([6.0, 40.0, 64.0, 30.0, 30.0, 2.0]), np.array([20.5, 24.1, 29.5, 31.0, 19.0, 25.0]))
    assert on.tolist() == [True, True, True, False, False, False]
    with pytest.raises(ValueError, match="negative"):
        drivable_mask_from_ground(material, (-1.0, 0.0), 0.2, (1,))


def _front_camera(width=400, height=225):
    from replay.sim.rig import camera_rig

    return camera_rig(width, height)["CAM_FRONT"]


def test_box_corners_match_devkit_box_and_view_points():
    from nuscenes.utils.data_classes import Box
    from nuscenes.utils.geometry_utils import view_points

    from replay.export.visibility import box_corners_global, corners_in_camera

    st = state_at(0.7)
    cam = _front_camera()
    ego = Pose(st.ego_pose.translation + [0.0, 0.0, 0.2], Quaternion(axis=[0.1, 0.0, 1.0], angle=0.3))
    ours = corners_in_camera(box_corners_global(st.agents), ego, cam)
    for agent, corners in zip(st.agents, ours):
        box = Box(agent.center, agent.size, agent.rotation)  # the devkit's get_sample_data transform chain
        box.translate(-ego.translation)
        box.rotate(ego.rotation.inverse)
        box.translate(-cam.sensor_to_ego.translation)
        box.rotate(cam.sensor_to_ego.rotation.inverse)
        np.testing.assert_allclose(corners, box.corners().T, atol=1e-9)
        if np.all(corners[:, 2] > 0.1):
            uv = corners @ cam.intrinsic.T
            np.testing.assert_allclose(uv[:, :2] / uv[:, 2:], view_points(box.corners(), cam.intrinsic, True)[:2].T, atol=1e-6)


def test_visible_fraction_counts_class_pixels_inside_the_projected_box():
    from replay.export.visibility import VisibilityAccumulator, box_corners_global, corners_in_camera, seg_label_of

    cam = _front_camera()
    ego = Pose(np.zeros(3), Quaternion())
    car = Agent("c", "vehicle.car", "car", np.array([2.0, 4.0, 1.5]), np.array([15.0, 0.0, 0.75]), Quaternion(), np.zeros(3), "")
    behind = Agent("b", "vehicle.car", "car", np.array([2.0, 4.0, 1.5]), np.array([-15.0, 0.0, 0.75]), Quaternion(), np.zeros(3), "")
    corners = corners_in_camera(box_corners_global([car]), ego, cam)[0]
    uv = corners @ cam.intrinsic.T
    uv = uv[:, :2] / uv[:, 2:]
    x0, y0 = np.floor(uv.min(0)).astype(int)
    x1, y1 = np.ceil(uv.max(0)).astype(int)
    vehicle = seg_label_of("car")
    labels = np.zeros((cam.height, cam.width), np.uint8)
    labels[y0:y1 + 1, x0:x1 + 1] = vehicle  # whole silhouette (and a bit more) painted
    acc = VisibilityAccumulator()
    acc.add_camera([car, behind], ego, cam, labels)
    assert acc.fractions() == {"b": 0.0, "c": 1.0}
    labels[:, (x0 + x1) // 2:] = 0  # right half hidden
    acc = VisibilityAccumulator()
    acc.add_camera([car], ego, cam, labels)
    assert 0.4 < acc.fractions()["c"] < 0.6
    with pytest.raises(ValueError, match="does not match"):
        acc.add_camera([car], ego, cam, labels[:-1])


def test_fill_factor_rescales_visible_fraction():
    from replay.export.visibility import (VisibilityAccumulator, box_corners_global, corners_in_camera,
                                          fill_factors, seg_label_of)

    cam = _front_camera()
    ego = Pose(np.array([50.0, 20.0, 0.0]), Quaternion(axis=[0, 0, 1], angle=0.4))
    ped = Agent("p", "human.pedestrian.adult", "pedestrian", np.array([0.7, 0.7, 1.8]), np.zeros(3), Quaternion(), np.zeros(3), "")

    def half_silhouette(agent):  # a class that covers the left half of its box hull
        uv = corners_in_camera(box_corners_global([agent]), ego, cam)[0] @ cam.intrinsic.T
        uv = uv[:, :2] / uv[:, 2:]
        x0, y0 = np.floor(uv.min(0)).astype(int)
        x1, y1 = np.ceil(uv.max(0)).astype(int)
        labels = np.zeros((cam.height, cam.width), np.uint8)
        labels[y0:y1 + 1, x0:(x0 + x1) // 2] = seg_label_of("pedestrian")
        return labels

    fill = fill_factors(half_silhouette, [ped], ego, cam)
    assert 0.4 < fill[("pedestrian", False)] < 0.6
    placed = Agent("p", ped.category, "pedestrian", ped.size, ego.transform_points(np.array([[12.0, 0, 0]]))[0] + [0, 0, 0.9],
                   ego.rotation, np.zeros(3), "")
    acc = VisibilityAccumulator(fill)
    acc.add_camera([placed], ego, cam, half_silhouette(placed))
    assert acc.fractions()["p"] > 0.95  # the whole silhouette is visible


def test_nearer_box_of_the_same_class_occludes():
    from replay.export.visibility import VisibilityAccumulator, seg_label_of

    cam = _front_camera()
    ego = Pose(np.zeros(3), Quaternion())
    size = np.array([2.0, 4.0, 1.5])
    near = Agent("near", "vehicle.car", "car", size, np.array([10.0, 0.0, 0.75]), Quaternion(), np.zeros(3), "")
    far = Agent("far", "vehicle.car", "car", size, np.array([20.0, 0.0, 0.75]), Quaternion(), np.zeros(3), "")
    labels = np.full((cam.height, cam.width), seg_label_of("car"), np.uint8)  # everything is 'vehicle'
    acc = VisibilityAccumulator()
    acc.add_camera([far, near], ego, cam, labels)  # order given does not matter
    frac = acc.fractions()
    assert frac["near"] == 1.0 and frac["far"] < 0.05  # the far car lies wholly behind the near one
