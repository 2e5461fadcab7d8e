"""12 Hz ground truth of a real log (replay/nuscenes/interpolate.py) on scene-0523, against the devkit's own
get_boxes, box_velocity and load_gt. The scene's sample_data table keeps its 12 Hz camera and 20 Hz lidar
sweep rows (only their files are absent), which is all the interpolation reads."""
from __future__ import annotations

import numpy as np
import pytest
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.common.loaders import add_center_dist, load_gt
from nuscenes.eval.detection.data_classes import DetectionBox
from nuscenes.nuscenes import NuScenes
from pyquaternion import Quaternion

from replay.nuscenes.interpolate import annotations_at, scene_samples, sweep_annotations


@pytest.fixture(scope="module")
def nusc(real_scene_root) -> NuScenes:
    return NuScenes("v1.0-trainval", str(real_scene_root), verbose=False)


def _anns(nusc: NuScenes, sample: dict) -> dict[str, dict]:
    """instance token -> annotation of one sample."""
    return {a["instance_token"]: a for a in (nusc.get("sample_annotation", t) for t in sample["anns"])}


def _sweeps(nusc: NuScenes) -> list[dict]:
    return [sd for sd in nusc.sample_data if not sd["is_key_frame"]]


def test_a_keyframe_gets_its_own_annotations_unchanged(nusc):
    keyframes = [sd for sd in nusc.sample_data if sd["is_key_frame"]]
    assert len(keyframes) == 40 * 12  # six cameras, lidar and five radars at 40 samples
    for sd in keyframes[::5]:
        sample = nusc.get("sample", sd["sample_token"])
        boxes = sweep_annotations(nusc, sd["token"])
        assert [b.annotation_token for b in boxes] == sample["anns"]
        for box in boxes:
            ann = nusc.get("sample_annotation", box.annotation_token)
            assert not box.interpolated and box.timestamp_us == sample["timestamp"]
            assert list(box.translation) == ann["translation"] and list(box.size) == ann["size"]
            assert list(box.rotation) == ann["rotation"] and box.instance_token == ann["instance_token"]
            np.testing.assert_array_equal(box.velocity, nusc.box_velocity(ann["token"])[:2])
            assert (box.num_lidar_pts, box.num_radar_pts) == (ann["num_lidar_pts"], ann["num_radar_pts"])


def test_keyframe_boxes_are_the_devkits_ground_truth_boxes(nusc):
    gt = add_center_dist(nusc, load_gt(nusc, "val", DetectionBox, verbose=False))
    compared = 0
    for sample in nusc.sample:
        lidar = sample["data"]["LIDAR_TOP"]  # the ego pose add_center_dist measures distances from
        ours = [b.detection_box(sample["token"]) for b in sweep_annotations(nusc, lidar) if b.detection_name]
        theirs = gt[sample["token"]]
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            sa, sb = a.serialize(), b.serialize()
            for key in ("translation", "size", "rotation", "velocity", "ego_translation"):
                np.testing.assert_allclose(sa.pop(key), sb.pop(key), rtol=0, atol=1e-9, err_msg=key)
            assert sa == sb
            compared += 1
    assert compared > 1000


def test_between_keyframes_centres_lie_on_the_segment_at_the_time_fraction(nusc):
    sweeps = _sweeps(nusc)
    assert len(sweeps) == 2608, "scene-0523 keeps its 12 Hz camera and 20 Hz lidar sweep rows"
    checked = 0
    for sd in sweeps[::7]:
        t1_rec = nusc.get("sample", sd["sample_token"])  # a sweep belongs to the keyframe after it
        t0_rec = nusc.get("sample", t1_rec["prev"])
        t0, t1, t = t0_rec["timestamp"], t1_rec["timestamp"], sd["timestamp"]
        assert t0 < t < t1
        a0, a1 = _anns(nusc, t0_rec), _anns(nusc, t1_rec)
        boxes = sweep_annotations(nusc, sd["token"])
        assert {b.instance_token for b in boxes} == set(a0) & set(a1)  # in both keyframes, and only those
        fraction = (t - t0) / (t1 - t0)
        c = np.array([b.translation for b in boxes])  # (N, 3)
        c0 = np.array([a0[b.instance_token]["translation"] for b in boxes])  # (N, 3)
        c1 = np.array([a1[b.instance_token]["translation"] for b in boxes])  # (N, 3)
        assert all(b.interpolated and b.timestamp_us == t for b in boxes)
        length = np.linalg.norm(c1 - c0, axis=1)  # (N,)
        np.testing.assert_allclose(np.linalg.norm(c - c0, axis=1) + np.linalg.norm(c1 - c, axis=1), length,
                                   atol=1e-9)  # on the segment
        np.testing.assert_allclose(np.linalg.norm(c - c0, axis=1), fraction * length, atol=1e-9)  # at the fraction
        np.testing.assert_allclose([b.velocity for b in boxes], (c1 - c0)[:, :2] / ((t1 - t0) * 1e-6), atol=1e-9)
        checked += len(boxes)
    assert checked > 5000


def test_sweeps_agree_with_the_devkits_get_boxes(nusc):
    """get_boxes interpolates centre and rotation for the instances of the later keyframe that the earlier one
    has too (size: the later one's); on those, ours must agree."""
    compared = 0
    for sd in _sweeps(nusc)[::17]:
        ours = {b.instance_token: b for b in sweep_annotations(nusc, sd["token"])}
        pairs = [(ours[inst], ref) for ref in nusc.get_boxes(sd["token"])
                 if (inst := nusc.get("sample_annotation", ref.token)["instance_token"]) in ours]
        # the others: not in the earlier keyframe; get_boxes keeps them un-interpolated, we leave them out
        np.testing.assert_allclose([b.translation for b, _ in pairs], [r.center for _, r in pairs], atol=1e-9)
        assert max(Quaternion.absolute_distance(Quaternion(b.rotation), r.orientation) for b, r in pairs) < 1e-9
        np.testing.assert_allclose([b.box().corners() for b, _ in pairs], [r.corners() for _, r in pairs],
                                   atol=0.05)  # sizes: ours interpolated, get_boxes' the later keyframe's
        compared += len(pairs)
    assert compared > 1500


def test_interpolated_velocity_averages_to_the_devkits_box_velocity(nusc):
    """box_velocity at a keyframe is the centred difference over its two neighbours: the time-weighted mean of
    the interpolation's velocities on the two segments around it."""
    samples = scene_samples(nusc, nusc.scene[0]["token"])
    checked = 0
    for before, at, after in zip(samples, samples[1:], samples[2:]):
        ta, tb, tc = before["timestamp"], at["timestamp"], after["timestamp"]
        mid_ab = annotations_at(nusc, at["scene_token"], (ta + tb) // 2, (0.0, 0.0, 0.0))
        mid_bc = annotations_at(nusc, at["scene_token"], (tb + tc) // 2, (0.0, 0.0, 0.0))
        v_ab = {b.instance_token: np.array(b.velocity) for b in mid_ab}
        v_bc = {b.instance_token: np.array(b.velocity) for b in mid_bc}
        for inst, ann in _anns(nusc, at).items():
            if inst in v_ab and inst in v_bc:
                expected = (v_ab[inst] * (tb - ta) + v_bc[inst] * (tc - tb)) / (tc - ta)
                np.testing.assert_allclose(nusc.box_velocity(ann["token"])[:2], expected, atol=1e-6)  # s from 1e-6 * us
                checked += 1
    assert checked > 1000


def test_arbitrary_times_between_and_outside_the_keyframes(nusc):
    scene = nusc.scene[0]["token"]
    samples = scene_samples(nusc, scene)
    s0, s1 = samples[10], samples[11]
    at_key = annotations_at(nusc, scene, s0["timestamp"], (0.0, 0.0, 0.0))
    assert [b.annotation_token for b in at_key] == s0["anns"] and not any(b.interpolated for b in at_key)
    ego = np.array([1.0, 2.0, 0.0])
    for fraction in (0.1, 0.5, 0.9):
        t = s0["timestamp"] + round(fraction * (s1["timestamp"] - s0["timestamp"]))
        amount = (t - s0["timestamp"]) / (s1["timestamp"] - s0["timestamp"])
        a0, a1 = _anns(nusc, s0), _anns(nusc, s1)
        for box in annotations_at(nusc, scene, t, ego):
            r0, r1 = a0[box.instance_token], a1[box.instance_token]
            c0, c1 = np.array(r0["translation"]), np.array(r1["translation"])
            np.testing.assert_allclose(box.translation, c0 + amount * (c1 - c0), atol=1e-9)
            np.testing.assert_allclose(box.size, np.array(r0["size"]) * (1 - amount) + np.array(r1["size"]) * amount)
            slerp = Quaternion.slerp(Quaternion(r0["rotation"]), Quaternion(r1["rotation"]), amount)
            assert Quaternion.absolute_distance(Quaternion(box.rotation), slerp) < 1e-9
            np.testing.assert_allclose(box.ego_translation, np.array(box.translation) - ego)
            assert box.annotation_token == r0["token"] and box.attribute_name in ("", *_attr_names(nusc, r0))
    with pytest.raises(ValueError, match="outside the keyframes"):
        annotations_at(nusc, scene, samples[0]["timestamp"] - 1, (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="outside the keyframes"):
        annotations_at(nusc, scene, samples[-1]["timestamp"] + 1, (0.0, 0.0, 0.0))


def _attr_names(nusc: NuScenes, ann: dict) -> list[str]:
    return [nusc.get("attribute", t)["name"] for t in ann["attribute_tokens"]]


def test_tracking_boxes_carry_the_instance_as_track_id(nusc):
    config_factory("tracking_nips_2019")  # the devkit sets TrackingBox's class list from the config
    sd = _sweeps(nusc)[100]
    boxes = [b for b in sweep_annotations(nusc, sd["token"]) if b.tracking_name]
    assert boxes
    for b in boxes:
        tb = b.tracking_box(sd["token"])
        assert tb.tracking_id == b.instance_token and tb.tracking_name == b.tracking_name and tb.num_pts >= 0
    not_tracked = [b for b in sweep_annotations(nusc, sd["token"]) if b.tracking_name is None]
    for b in not_tracked[:1]:
        with pytest.raises(ValueError, match="not a tracking class"):
            b.tracking_box(sd["token"])
