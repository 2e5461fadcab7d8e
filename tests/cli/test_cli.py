"""The CLI end to end with the real model (random weights unless shipped): `replay` of the real
nuScenes scene into a devkit-loadable submission, and `demo` on the live simulated vehicle."""
from __future__ import annotations

import json

from cli.main import main


def test_replay_real_scene_writes_a_devkit_loadable_submission(ray_session, real_scene_root, tmp_path):
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.nuscenes import NuScenes

    out = tmp_path / "run"
    rc = main(["replay", "--dataroot", str(real_scene_root), "--version", "v1.0-trainval", "--keyframes-only",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    nusc = NuScenes("v1.0-trainval", str(real_scene_root), verbose=False)
    samples = {s["token"] for s in nusc.sample}
    boxes, meta = load_prediction(str(out / "results_nusc.json"), 500, DetectionBox)
    assert set(boxes.sample_tokens) == samples and meta["use_camera"]
    lines = [json.loads(x) for x in (out / "ticks.jsonl").read_text().splitlines()]
    assert len(lines) == len(samples)  # keyframes only: one record per sample, each exactly once
    assert {x["sample_token"] for x in lines} == samples
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frame_sets"] == len(samples) and summary["dropped"] == 0  # replay loses nothing
    assert summary["config"]["source"]["nuscenes"]["keyframes_only"] is True

    # `viz` draws the run's ticks over the images it re-reads from the dataroot
    from PIL import Image

    assert main(["viz", "--run", str(out), "--dataroot", str(real_scene_root), "--version", "v1.0-trainval",
                 "--pictures", "2"]) == 0
    pictures = sorted((out / "pictures").glob("*.png"))
    assert len(pictures) == 4 and {p.name.split("_")[-1] for p in pictures} == {"cameras.png", "bev.png"}
    assert all(min(Image.open(p).size) > 100 for p in pictures)
    assert main(["viz", "--run", str(tmp_path / "nowhere"), "--dataroot", str(real_scene_root)]) == 2


def test_demo_leaves_outputs_and_pictures(ray_session, tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--seconds", "2", "--out", str(out), "--no-progress", "--pictures", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "ticks.jsonl").read_text().splitlines()
    assert len(lines) == summary["frame_sets"] > 0
    assert summary["ticks"] + summary["dropped"] == summary["frame_sets"]
    assert summary["ticks"] >= 1  # the newest frame set always runs: live drops the oldest
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert any(p.endswith("_cameras.png") for p in pngs) and any(p.endswith("_bev.png") for p in pngs)
