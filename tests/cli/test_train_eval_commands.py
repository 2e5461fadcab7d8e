"""`bevstream train` and `bevstream eval` end to end on the real scene with a tiny model (a few steps)."""
from __future__ import annotations

import json

import pytest
import torch

from schema.classes import DETECTION_NAMES
from schema.classes import TRACKING_NAMES
from cli.main import main
from tests.perception.model_fixtures import TINY_MODEL_YAML as TINY_MODEL



@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_train_resume_export_then_eval(real_scene_root, tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_MODEL)
    ckpt = tmp_path / "ckpt"
    common = ["train", "--data", str(real_scene_root), "--version", "v1.0-trainval", "--split", "val", "--keyframes-only",
              "--allow-missing-road", "--out", str(ckpt), "--steps", "3", "--clip-length", "2", "--workers", "0",
              "--config", str(cfg), "--no-progress", "--checkpoint-every", "1"]
    assert main(common + ["--stop-at", "2"]) == 0
    assert main(common + ["--resume", "--export-weights", str(tmp_path / "w.pt")]) == 0
    rows = [json.loads(line) for line in (ckpt / "curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] > 0 for r in rows)
    saved = torch.load(tmp_path / "w.pt", weights_only=False)
    assert saved["step"] == 3 and "optimizer" not in saved and saved["config"]["model"]["video"]["enabled"] is True
    assert json.loads((ckpt / "train_args.json").read_text())["scenes"][0].endswith("scene-0523")

    out = tmp_path / "eval"
    loose = tmp_path / "loose.yaml"  # the three best boxes of every frame, however low they score
    loose.write_text(TINY_MODEL + "  detection: {score_threshold: 0.0, max_detections: 3}\n")
    assert main(["eval", "--dataroot", str(real_scene_root), "--version", "v1.0-trainval", "--split", "val",
                 "--checkpoint", str(tmp_path / "w.pt"), "--out", str(out), "--keyframes-only", "--no-progress",
                 "--config", str(loose)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["keyframes"] == 40 and report["meta"]["checkpoint"] == str(tmp_path / "w.pt")
    assert report["meta"]["attributes"] == {"vehicle_moving_mps": 0.2, "pedestrian_moving_mps": 0.2, "cycle_moving_mps": 0.2}
    assert report["meta"]["nms_radius_m"] == report["meta"]["still_speed_mps"] == dict.fromkeys(DETECTION_NAMES, 0.0)
    assert report["meta"]["tracking"]["enabled"] is True and report["meta"]["tracking"]["score_memory_s"] > 0
    assert set(report["detection"]) >= {"NDS", "mAP", "mATE", "mASE", "mAOE", "mAVE", "mAAE", "per_class_AP", "velocity_by_speed", "translation_by_range"}
    assert report["segmentation"].startswith("not available") and report["road"].startswith("not available")
    results = json.loads((out / "results_nusc.json").read_text())
    assert len(results["results"]) == 40  # every sample of the split, as the devkit requires
    tracks = json.loads((out / "results_tracking.json").read_text())["results"]
    assert len(tracks) == 40 and all(b["tracking_id"].startswith("0-") for boxes in tracks.values() for b in boxes)
    kept = [b for boxes in results["results"].values() for b in boxes if b["detection_name"] in TRACKING_NAMES]
    assert sum(map(len, tracks.values())) == len(kept)  # the same boxes, those of the tracking classes
    assert kept
    assert 0 <= report["tracking"]["AMOTA"] <= 1 and (out / "tracking" / "metrics_summary.json").is_file()
    assert main(["eval", "--dataroot", str(real_scene_root), "--version", "v1.0-trainval", "--split", "val",
                 "--checkpoint", str(tmp_path / "w.pt"), "--out", str(tmp_path / "reset"), "--keyframes-only",
                 "--no-progress", "--config", str(loose), "--reset-every", "2"]) == 0
    tracks = json.loads((tmp_path / "reset" / "results_tracking.json").read_text())["results"]
    seen = {}  # the tracker restarts (and numbers its tracks from 0) every other frame: no id spans two starts
    for token, boxes in tracks.items():
        for b in boxes:
            seen.setdefault(b["tracking_id"], set()).add(token)
    assert seen and max(map(len, seen.values())) <= 2
    assert len({i.split("-")[0] for i in seen}) > 1
    printed = capsys.readouterr().out
    assert "NDS" in printed and "tracking" in printed

    # calibrate: the annotations as predictions (their own velocities): thresholds that name them better
    # than CenterPoint's 0.2 m/s, stored in the weights file
    from nuscenes.nuscenes import NuScenes

    from perception.checkpoint import load_trained_model
    from replay.nuscenes.submission import ground_truth_results, write_submission

    gt = write_submission(tmp_path / "gt.json", ground_truth_results(NuScenes("v1.0-trainval", str(real_scene_root), verbose=False), "val"))
    cal = ["calibrate", "--weights", str(tmp_path / "w.pt"), "--dataroot", str(real_scene_root), "--version",
           "v1.0-trainval", "--split", "val", "--results", str(gt), "--out", str(tmp_path / "cal")]
    assert main(cal) == 0 and load_trained_model(tmp_path / "w.pt").config.attributes.vehicle_moving_mps == 0.2  # dry run
    from perception.checkpoint import save_model_options

    save_model_options(tmp_path / "w.pt", "detection", {**saved["config"]["model"]["detection"], "nms_radius_m": [1.0] * 10,
                                                        "still_speed_mps": [1.0] * 10})
    assert main(cal + ["--write"]) == 0
    record = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert {f["group"] for f in record["fits"]} == {"vehicle", "pedestrian", "cycle"}
    assert all(f["accuracy"] >= f["previous_accuracy"] and f["boxes"] > 0 for f in record["fits"])
    stored = load_trained_model(tmp_path / "w.pt").config
    assert stored.attributes.vehicle_moving_mps == record["attributes"]["vehicle_moving_mps"]
    assert len(record["radius_fits"]) == 10 and all(f["ap"] >= f["previous_ap"] and f["previous_radius"] == 1.0
                                                    for f in record["radius_fits"])
    assert list(stored.detection.nms_radius_m) == record["nms_radius_m"] == [0.0] * 10  # clean boxes: no radius
    assert len(record["still_speed_fits"]) == 8 and all(f["vel_err"] <= f["previous_vel_err"] for f in record["still_speed_fits"])
    # exact velocities: no still speed; cones and barriers (no scored velocity) keep theirs
    assert list(stored.detection.still_speed_mps) == record["still_speed_mps"] == [0.0] * 8 + [1.0] * 2
    assert stored.detection.score_threshold == saved["config"]["model"]["detection"]["score_threshold"]  # the rest kept
    assert main(cal[:2] + [str(tmp_path / "none.pt")] + cal[3:]) == 2
    assert "weights not found" in capsys.readouterr().err


def test_streaming_train_carries_the_state_through_a_resume(real_scene_root, tmp_path):
    from perception.state import TemporalState
    from perception.checkpoint import load_checkpoint

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_MODEL)
    ckpt = tmp_path / "ckpt"
    common = ["train", "--data", str(real_scene_root), "--version", "v1.0-trainval", "--split", "val", "--keyframes-only",
              "--allow-missing-road", "--out", str(ckpt), "--steps", "3", "--clip-length", "2", "--workers", "0",
              "--config", str(cfg), "--no-progress", "--checkpoint-every", "1", "--stream"]
    assert main(common + ["--stop-at", "2"]) == 0
    state = load_checkpoint(ckpt)
    assert isinstance(state["stream_state"], TemporalState) and bool(state["stream_state"].started.all())
    assert state["config"]["stream"] is True and state["config"]["train"]["stream"] is True
    assert main(common + ["--resume"]) == 0
    assert load_checkpoint(ckpt)["step"] == 3


def test_eval_of_a_results_file_and_bad_input(real_scene_root, tmp_path, capsys):
    from nuscenes.nuscenes import NuScenes

    from replay.nuscenes.submission import ground_truth_results, ground_truth_tracks, write_submission

    nusc = NuScenes("v1.0-trainval", str(real_scene_root), verbose=False)
    path = write_submission(tmp_path / "gt.json", ground_truth_results(nusc, "val"))
    assert main(["eval", "--dataroot", str(real_scene_root), "--version", "v1.0-trainval", "--split", "val",
                 "--results", str(path), "--out", str(tmp_path / "e")]) == 0
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["detection"]["NDS"] == pytest.approx(1.0, abs=1e-3)  # the visible annotations score perfectly
    assert report["tracking"].startswith("not available")
    tracks = write_submission(tmp_path / "tracks.json", ground_truth_tracks(nusc, "val"))
    assert main(["eval", "--dataroot", str(real_scene_root), "--version", "v1.0-trainval", "--split", "val",
                 "--results", str(path), "--tracking-results", str(tracks), "--out", str(tmp_path / "t")]) == 0
    report = json.loads((tmp_path / "t" / "report.json").read_text())
    assert report["tracking"]["AMOTA"] == pytest.approx(1.0, abs=1e-6) and report["tracking"]["IDS"] == 0
    assert main(["eval", "--dataroot", str(real_scene_root), "--version", "v1.0-trainval", "--split", "val",
                 "--results", str(path), "--tracking-results", str(path), "--out", str(tmp_path / "t")]) == 2
    assert "is not a tracking submission: its boxes lack tracking_id" in capsys.readouterr().err
    assert main(["eval", "--dataroot", str(real_scene_root), "--version", "v1.0-trainval", "--tracking-results", str(tracks)]) == 2
    assert "--tracking-results goes with --results" in capsys.readouterr().err
    assert main(["eval", "--dataroot", str(real_scene_root), "--version", "v1.0-trainval", "--split", "nope",
                 "--results", str(path), "--out", str(tmp_path / "e")]) == 2
    assert "unknown split" in capsys.readouterr().err
    assert main(["eval", "--dataroot", str(real_scene_root), "--version", "v1.0-trainval", "--reset-every", "0"]) == 2
    assert "--reset-every must be >= 1" in capsys.readouterr().err
    assert main(["eval", "--dataroot", str(real_scene_root), "--version", "v1.0-trainval", "--max-range", "-5"]) == 2
    assert "--max-range must be > 0 metres" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  tracking:\n    score_track_weight: 2\n")
    assert main(["eval", "--dataroot", str(real_scene_root), "--version", "v1.0-trainval", "--split", "val",
                 "--config", str(bad), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "model.tracking" in err and "score_track_weight must lie in [0, 1]" in err and "Traceback" not in err
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "c")]) == 2


def test_average_command_writes_the_soup_and_refuses_bad_input(tmp_path, capsys):
    """`bevstream average`: two files give a loadable mean; one file or a missing one: one message, exit 2."""
    from perception.config import model_config_to_dict
    from perception.model import BEVStreamModel
    from perception.checkpoint import CHECKPOINT_FORMAT, load_trained_model
    from tests.perception.model_fixtures import tiny_config

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = BEVStreamModel(tiny_config())
        paths.append(str(tmp_path / f"w{seed}.pt"))
        torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "step": seed,
                    "config": {"model": model_config_to_dict(model.config)}}, paths[-1])
    assert main(["average", "--weights", *paths, "--out", str(tmp_path / "soup.pt")]) == 0
    assert load_trained_model(tmp_path / "soup.pt").config == tiny_config()
    assert main(["average", "--weights", paths[0], "--out", str(tmp_path / "one.pt")]) == 2
    assert main(["average", "--weights", paths[0], str(tmp_path / "missing.pt"), "--out", str(tmp_path / "two.pt")]) == 2
    err = capsys.readouterr().err
    assert "need at least two weights files" in err and "no checkpoint at" in err and "missing.pt" in err
    assert not (tmp_path / "one.pt").exists() and not (tmp_path / "two.pt").exists()


def test_train_parses_lr_scales_and_rejects_a_malformed_one(capsys, tmp_path):
    from cli.train import parse_lr_scale

    assert parse_lr_scale("bev_encoder.layers.*.depth_out.*=10") == ("bev_encoder.layers.*.depth_out.*", 10.0)
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "ckpt"), "--lr-scale", "depth_out"]) == 2
    assert "--lr-scale expects PATTERN=FACTOR, got 'depth_out'" in capsys.readouterr().err


def test_calibrate_fits_the_tracker_levels_on_recorded_frames_and_stores_them(real_scene_root, tmp_path, capsys):
    """`bevstream calibrate --ticks`: the annotations as recorded frames, centres and velocities made noisy,
    replayed through the tracker; the fitted levels score at least the weights' own and are stored."""
    import numpy as np
    from nuscenes.nuscenes import NuScenes

    from perception.config import model_config_to_dict
    from perception.model import BEVStreamModel
    from lab.calibration.tracking import CANDIDATE_LEVELS
    from lab.recording import TickBoxes, ticks_to_file
    from perception.checkpoint import CHECKPOINT_FORMAT, load_trained_model
    from lab.groundtruth import GroundTruth
    from replay.nuscenes.submission import split_sample_tokens
    from schema.messages import Pose
    from tests.perception.model_fixtures import tiny_config

    nusc = NuScenes("v1.0-trainval", str(real_scene_root), verbose=False)
    reader, rng, ticks = GroundTruth(nusc), np.random.default_rng(0), []
    for token in split_sample_tokens(nusc, "val"):
        sample = nusc.get("sample", token)
        pose = Pose.from_record(nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"]))
        gt = reader.boxes_at(sample["scene_token"], sample["timestamp"], pose, sample_token=token)
        cars = gt.labels == DETECTION_NAMES.index("car")  # one class keeps the devkit's scoring of each trial short
        boxes, labels = torch.from_numpy(gt.boxes[cars]).double(), torch.from_numpy(gt.labels[cars])
        boxes[:, :2] += torch.from_numpy(rng.normal(0.0, 0.5, (len(boxes), 2)))
        boxes[:, 7:9] += torch.from_numpy(rng.normal(0.0, 1.0, (len(boxes), 2)))
        ticks.append(TickBoxes(not ticks, sample["timestamp"] / 1e6, pose, token, boxes,
                               torch.from_numpy(rng.uniform(0.3, 0.9, len(boxes))), labels))
    ticks_to_file(ticks, tmp_path / "ticks.pt")
    model = BEVStreamModel(tiny_config())
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "step": 0,
                "config": {"model": model_config_to_dict(model.config)}}, tmp_path / "w.pt")

    cal = ["calibrate", "--weights", str(tmp_path / "w.pt"), "--dataroot", str(real_scene_root), "--version",
           "v1.0-trainval", "--split", "val", "--out", str(tmp_path / "cal")]
    assert main(cal + ["--ticks", str(tmp_path / "ticks.pt"), "--write"]) == 0
    record = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    fit = record["tracking_fit"]
    assert set(record["tracking"]) == set(CANDIDATE_LEVELS) and fit["nds"] >= fit["previous_nds"] > 0.03
    assert fit["trials"][0]["levels"] == fit["previous_levels"] and len(fit["trials"]) >= 1 + 4 * len(CANDIDATE_LEVELS) - 5
    stored = load_trained_model(tmp_path / "w.pt").config.tracking
    assert {k: getattr(stored, k) for k in CANDIDATE_LEVELS} == record["tracking"]
    assert json.loads((tmp_path / "cal" / "results_nusc.json").read_text())["results"]  # the fitted tracker's boxes
    assert "tracker level" in capsys.readouterr().out

    assert main(cal + ["--ticks", str(tmp_path / "ticks.pt"), "--results", str(tmp_path / "cal" / "results_nusc.json")]) == 2
    assert "not both" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_text("junk")
    assert main(cal + ["--ticks", str(tmp_path / "bad.pt")]) == 2
    assert "not the frames file" in capsys.readouterr().err


def test_calibrate_runs_the_model_records_its_frames_and_refuses_weights_without_boxes(real_scene_root, tmp_path, capsys):
    """Untrained weights at the default score threshold give no box: one line, exit 2. With every box let
    through, the model's frames are recorded (ticks.pt) and the tracker fit, finding nothing to gain on random
    boxes, keeps the weights' levels."""
    from perception.config import model_config_to_dict
    from perception.model import BEVStreamModel
    from lab.calibration.tracking import CANDIDATE_LEVELS
    from lab.recording import ticks_from_file
    from perception.checkpoint import CHECKPOINT_FORMAT
    from tests.perception.model_fixtures import tiny_config

    torch.manual_seed(0)
    model = BEVStreamModel(tiny_config())
    torch.save({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "step": 0,
                "config": {"model": model_config_to_dict(model.config)}}, tmp_path / "w.pt")
    cal = ["calibrate", "--weights", str(tmp_path / "w.pt"), "--dataroot", str(real_scene_root), "--version",
           "v1.0-trainval", "--split", "val", "--keyframes-only", "--no-progress", "--out", str(tmp_path / "cal")]
    assert main(cal) == 2
    assert "no predicted box on the 40 samples" in capsys.readouterr().err
    loose = tmp_path / "loose.yaml"
    loose.write_text("model:\n  detection: {score_threshold: 0.0, max_detections: 3}\n")
    assert main(cal + ["--config", str(loose)]) == 0
    ticks = ticks_from_file(tmp_path / "cal" / "ticks.pt")
    assert len(ticks) == 40 and all(len(t.boxes) == 3 for t in ticks) and ticks[0].new_scene
    fit = json.loads((tmp_path / "cal" / "calibration.json").read_text())["tracking_fit"]
    assert fit["levels"] == fit["previous_levels"] and fit["nds"] == fit["previous_nds"]
    assert len(fit["trials"]) == 1 + sum(len(v) - 1 for v in CANDIDATE_LEVELS.values())  # one sweep: no level moved
