"""`bevstream sim --annotate-every-frame`: a dataroot whose every 12 Hz camera cycle is a sample, loaded and
scored by the devkit unmodified."""
from __future__ import annotations

import json

import numpy as np
import pytest
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.detection.evaluate import DetectionEval
from nuscenes.nuscenes import NuScenes

from replay.export.dataset import KEYFRAME_EVERY, ExportConfig, export_dataset, scene_seed, scene_start_us
from replay.export.tables import make_token
from replay.nuscenes.submission import ground_truth_results, write_submission
from replay.sim.world import World
from schema.classes import DETECTION_NAMES

# One mini_val scene (scene-0103) of 2.5 s: 25 camera cycles. Seed 1's scene shows all ten detection
# classes within their evaluation ranges in that time, so mAP is meaningful.
CONFIG = dict(scenes=1, seed=1, split="val", version="v1.0-mini", width=160, height=90, duration_s=2.5, workers=1)
CYCLES = 25
CYCLE_US = 1e6 / 12.0


@pytest.fixture(scope="module")
def every_frame(tmp_path_factory):
    """(export config, summary, devkit) of the tiny every-frame export."""
    cfg = ExportConfig(out=tmp_path_factory.mktemp("every_frame"), annotate_every_frame=True, **CONFIG)
    summary = export_dataset(cfg)
    return cfg, summary, NuScenes(cfg.version, str(cfg.out), verbose=False)


def test_sample_counts_follow_the_flag():
    plain = ExportConfig(out=".", **CONFIG)
    every = ExportConfig(out=".", annotate_every_frame=True, **CONFIG)
    assert (plain.keyframe_every, plain.num_samples) == (KEYFRAME_EVERY, 5)
    assert (every.keyframe_every, every.num_samples) == (1, CYCLES)  # the same drive, every cycle a sample


def test_every_camera_cycle_is_a_sample_with_annotations(every_frame):
    cfg, summary, nusc = every_frame
    assert [s["name"] for s in nusc.scene] == ["scene-0103"] and nusc.scene[0]["nbr_samples"] == CYCLES
    assert summary.samples == len(nusc.sample) == CYCLES and summary.camera_images == CYCLES * 6
    assert not (cfg.out / "sweeps").exists()
    assert all(sd["is_key_frame"] for sd in nusc.sample_data)  # no sweeps: every camera frame is a keyframe
    times = sorted(s["timestamp"] for s in nusc.sample)
    np.testing.assert_allclose(np.diff(times), CYCLE_US, atol=1)  # 12 Hz samples
    offsets: dict[str, set[int]] = {}  # channel -> its frame's time minus the sample's, over the samples
    for sample in nusc.sample:
        assert len(sample["data"]) == 7 and len(sample["anns"]) > 0
        lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        assert lidar["timestamp"] == sample["timestamp"] and (cfg.out / lidar["filename"]).is_file()
        for channel, token in sample["data"].items():
            offsets.setdefault(channel, set()).add(nusc.get("sample_data", token)["timestamp"] - sample["timestamp"])
    for channel, seen in offsets.items():  # each sample holds the cameras of its own cycle: the rig's fixed offsets
        assert max(seen) - min(seen) <= 2 and max(map(abs, seen)) < 50_000, channel
    manifest = json.loads((cfg.out / "bevstream" / "manifest.json").read_text())
    assert manifest["config"]["annotate_every_frame"] is True and "12 Hz" in manifest["samples"]


def test_tracks_are_linked_at_12_hz_and_give_the_true_velocities(every_frame):
    """box_velocity's centred difference over the 1/12 s neighbours matches the simulator's own velocity."""
    cfg, _, nusc = every_frame
    for inst in nusc.instance:
        n, tok = 0, inst["first_annotation_token"]
        while tok:
            n, last, tok = n + 1, tok, nusc.get("sample_annotation", tok)["next"]
        assert n == inst["nbr_annotations"] and last == inst["last_annotation_token"]
    world = World(scene_seed(cfg.seed, 0))
    errors, points = [], []
    for sample in nusc.sample:
        state = world.state_at((sample["timestamp"] - scene_start_us(0)) / 1e6)
        # instance tokens are md5 of the scene key and the simulator's instance id
        truth = {make_token("instance", f"seed{cfg.seed}/scene0", a.instance_id): a for a in state.agents}
        for token in sample["anns"]:
            ann = nusc.get("sample_annotation", token)
            agent = truth[ann["instance_token"]]
            np.testing.assert_allclose(ann["translation"], agent.center, atol=1e-5)
            points.append(ann["num_lidar_pts"])
            if ann["prev"] and ann["next"]:
                errors.append(np.linalg.norm(nusc.box_velocity(token)[:2] - agent.velocity[:2]))
    assert len(errors) > 1000 and np.median(errors) < 0.05 and np.percentile(errors, 95) < 0.5
    assert np.mean(np.array(points) > 0) > 0.3  # a lidar sweep at every sample counts the points on the boxes


def test_ground_truth_as_predictions_scores_every_sample(every_frame, tmp_path):
    _, _, nusc = every_frame
    results = ground_truth_results(nusc, "mini_val")
    assert len(results) == CYCLES and all(results.values())
    path = write_submission(tmp_path / "results_nusc.json", results)
    evaluator = DetectionEval(nusc, config_factory("detection_cvpr_2019"), str(path), eval_set="mini_val",
                              output_dir=str(tmp_path / "eval"), verbose=False)
    metrics, _ = evaluator.evaluate()
    present = {b.detection_name for b in evaluator.gt_boxes.all}
    assert present == set(DETECTION_NAMES), f"the scene lacks {set(DETECTION_NAMES) - present}: pick another seed"
    for name in present:
        assert metrics.get_label_ap(name, 2.0) > 0.99, name
    assert metrics.mean_ap > 0.9 and metrics.nd_score > 0.9
    tp = metrics.tp_errors
    assert tp["trans_err"] < 1e-3 and tp["scale_err"] < 1e-3 and tp["vel_err"] < 1e-3
