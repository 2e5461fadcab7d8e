"""The camera renderer: deterministic, matches a slow reference, labels agree with devkit box projections,
and nearer objects occlude farther ones."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from nuscenes.utils.data_classes import Box
from nuscenes.utils.geometry_utils import view_points

from schema.classes import DETECTION_TO_SEG, SEG_CLASSES, SEG_INDEX
from replay.sim.render import Renderer, render_labels_reference
from replay.sim.rig import camera_rig
from replay.sim.world import AgentState, World
from tests.replay.scenarios import place_agents, straight_time
from schema.messages import CAMERA_CHANNELS

SEED = 11


@pytest.fixture(scope="module")
def world() -> World:
    return World(SEED)


@pytest.fixture(scope="module")
def renderer(world) -> Renderer:
    return Renderer(world, 320, 180)


@pytest.fixture(scope="module")
def rig():
    return camera_rig(320, 180)






def _project_center(agent: AgentState, state, cam) -> np.ndarray:
    """Pixel (u, v) and depth of the agent's box centre, through the devkit's Box and view_points."""
    box = Box(agent.center, agent.size, agent.rotation)
    box.translate(-state.ego_pose.translation)
    box.rotate(state.ego_pose.rotation.inverse)
    box.translate(-cam.sensor_to_ego.translation)
    box.rotate(cam.sensor_to_ego.rotation.inverse)
    uv = view_points(box.center[:, None], cam.intrinsic, normalize=True)[:, 0]
    return np.array([uv[0], uv[1], box.center[2]])


def test_shapes_and_byte_determinism(world, renderer, rig):
    state = world.state_at(4.0)
    other = Renderer(World(SEED), 320, 180)
    for ch in CAMERA_CHANNELS:
        img, lab = renderer.render(state, rig[ch])
        assert img.shape == (180, 320, 3) and img.dtype == np.uint8
        assert lab.shape == (180, 320) and lab.dtype == np.uint8 and lab.max() < len(SEG_CLASSES)
        img2, lab2 = other.render(other.world.state_at(4.0), rig[ch])
        assert img.tobytes() == img2.tobytes() and lab.tobytes() == lab2.tobytes()
    diff = Renderer(World(SEED + 1), 320, 180)
    img3, _ = diff.render(diff.world.state_at(4.0), rig["CAM_FRONT"])
    assert img3.tobytes() != renderer.render(state, rig["CAM_FRONT"])[0].tobytes()


def test_scene_content_front_camera(world, renderer, rig):
    img, lab = renderer.render(world.state_at(straight_time(world)), rig["CAM_FRONT"])
    assert np.mean(lab[:20] == SEG_INDEX["sky"]) > 0.3  # sky on top (some buildings)
    bottom = lab[-30:, 100:220]
    assert np.mean((bottom == SEG_INDEX["road"]) | (bottom == SEG_INDEX["lane_marking"])) > 0.9  # road ahead
    present = set(np.unique(lab).tolist())
    for name in ("sky", "road", "lane_marking", "vehicle"):
        assert SEG_INDEX[name] in present, name
    assert img.std() > 20  # not a flat image


def test_matches_slow_reference(world):
    """The fast ray caster equals the full-image float64 reference up to a few edge pixels."""
    small, small_rig = Renderer(world, 128, 72), camera_rig(128, 72)
    state = world.state_at(6.0)
    for ch in ("CAM_FRONT", "CAM_BACK_LEFT"):
        _, lab = small.render(state, small_rig[ch])
        ref, _ = render_labels_reference(small, state, small_rig[ch])
        assert np.mean(lab == ref) > 0.995, ch


def test_devkit_projection_lands_on_class_pixels(world, renderer, rig):
    t = straight_time(world)
    placements = [("car", 14.0, 0.0, 0.0), ("pedestrian", 9.0, -2.5, 1.0), ("traffic_cone", 7.0, 2.0, 0.0),
                  ("truck", 30.0, 3.0, 0.0), ("bicycle", 11.0, 3.0, 0.3), ("barrier", 12.0, -4.0, 1.57)]
    state = place_agents(world, t, placements)
    cam = rig["CAM_FRONT"]
    _, lab = renderer.render(state, cam)
    for agent in state.agents:
        u, v, z = _project_center(agent, state, cam)
        assert z > 0 and 0 <= u < 320 and 0 <= v < 180, agent.detection_name
        want = SEG_INDEX[DETECTION_TO_SEG[agent.detection_name]]
        assert lab[int(v), int(u)] == want, (agent.detection_name, SEG_CLASSES[lab[int(v), int(u)]])


def _segment_hits_box(p0, p1, center, yaw, half) -> bool:
    """Does the segment p0 -> p1 (global) pass through an oriented box (slab test)?"""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    o, d = rot.T @ (p0 - center), rot.T @ (p1 - p0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - o) / d, (half - o) / d
    tn, tf = np.nanmax(np.minimum(t1, t2)), np.nanmin(np.maximum(t1, t2))
    return bool(tn <= tf and tf > 0 and tn < 1)


def test_real_agents_project_onto_their_class(world, renderer, rig):
    """Agents of the simulated traffic whose box centre is not hidden behind another object land on their class."""
    hits, total, hidden = 0, 0, 0
    sb = world.structures.boxes
    for t in (2.0, 8.0, 14.0):
        state = world.state_at(t)
        for ch in ("CAM_FRONT", "CAM_BACK", "CAM_FRONT_LEFT"):
            cam = rig[ch]
            _, lab = renderer.render(state, cam)
            origin = (state.ego_pose.matrix @ cam.sensor_to_ego.matrix)[:3, 3]
            for agent in state.agents:
                u, v, z = _project_center(agent, state, cam)
                if not (2.0 < z < 35.0 and 0 <= u < 320 and 0 <= v < 180):
                    continue
                blockers = [(o.center, o.yaw, np.array([o.size[1], o.size[0], o.size[2]]) / 2)
                            for o in state.agents if o is not agent]
                blockers += [(b[:3], b[6], np.array([b[4], b[3], b[5]]) / 2) for b in sb
                             if np.linalg.norm(b[:2] - agent.center[:2]) < 60]
                if any(_segment_hits_box(origin, agent.center, *b) for b in blockers):
                    hidden += 1
                    continue
                total += 1
                hits += lab[int(v), int(u)] == SEG_INDEX[DETECTION_TO_SEG[agent.detection_name]]
    assert total >= 20 and hits / total > 0.95, (hits, total, hidden)


def test_near_object_occludes_far_one(world, renderer, rig):
    t = straight_time(world)
    cam = rig["CAM_FRONT"]
    hidden = place_agents(world, t, [("bus", 12.0, 0.0, 0.0), ("pedestrian", 24.0, 0.0, 0.0), ("traffic_cone", 22.0, 0.5, 0.0)])
    _, lab = renderer.render(hidden, cam)
    assert np.sum(lab == SEG_INDEX["vehicle"]) > 500
    assert np.sum(lab == SEG_INDEX["pedestrian"]) == 0 and np.sum(lab == SEG_INDEX["cone_barrier"]) == 0
    visible = replace(hidden, agents=hidden.agents[1:])
    _, lab2 = renderer.render(visible, cam)
    assert np.sum(lab2 == SEG_INDEX["pedestrian"]) > 10 and np.sum(lab2 == SEG_INDEX["cone_barrier"]) > 5


def test_faces_are_shaded_differently(world, renderer, rig):
    """A car seen from a corner shows two faces of one colour under different light."""
    t = straight_time(world)
    state = place_agents(world, t, [("car", 10.0, 0.0, 0.7)])
    img, lab = renderer.render(state, rig["CAM_FRONT"])
    body = img[lab == SEG_INDEX["vehicle"]]
    colours = {tuple(c) for c in body}
    assert len(colours) >= 3  # several faces/parts, not one flat silhouette


def test_resolution_mismatch_is_an_error(world, renderer):
    with pytest.raises(ValueError, match="320x180"):
        renderer.render(world.state_at(0.0), camera_rig(800, 450)["CAM_FRONT"])


def test_light_state_renders_byte_identical(world, renderer, rig):
    """The live vehicle's array states (World.light_state_at) give exactly the images of state_at."""
    fresh = Renderer(World(SEED), 320, 180)
    times = [3.0, 3.0 + 5 / 72, 3.5]
    for t, light in zip(times, fresh.world.light_states_at(times)):  # a batch, as the live vehicle does
        full = world.state_at(t)
        for ch in ("CAM_FRONT", "CAM_BACK_LEFT"):
            img, lab = renderer.render(full, rig[ch])
            img2, lab2 = fresh.render(light, rig[ch])
            assert img.tobytes() == img2.tobytes() and lab.tobytes() == lab2.tobytes()
