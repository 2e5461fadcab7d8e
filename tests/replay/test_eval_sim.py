"""`bevstream train` + `bevstream eval` on the simulator's export: every report section is computed.

(The sim_dataset fixture lives in tests/replay/conftest.py, hence this file's place.)
"""
from __future__ import annotations

import json

import pytest
import torch

from cli.main import main
from tests.perception.model_fixtures import TINY_MODEL_YAML as TINY_MODEL



def test_train_then_eval_on_sim(sim_dataset, tmp_path):
    torch.set_num_threads(1)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_MODEL)
    root, version = str(sim_dataset.dataroot), sim_dataset.version
    assert main(["train", "--data", root, "--version", version, "--out", str(tmp_path / "ckpt"), "--steps", "2",
                 "--clip-length", "3", "--workers", "0", "--config", str(cfg), "--no-progress", "--no-video"]) == 0
    args = json.loads((tmp_path / "ckpt" / "train_args.json").read_text())
    train_scenes = [n for n, split in sim_dataset.summary.scenes if split == "train"]
    assert [s.split(":")[-1] for s in args["scenes"]] == train_scenes, "--split train keeps the held-out scenes out"
    out = tmp_path / "eval"
    assert main(["eval", "--dataroot", root, "--version", version, "--split", "val", "--checkpoint",
                 str(tmp_path / "ckpt" / "last.pt"), "--out", str(out), "--no-progress", "--config", str(cfg)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["eval_set"] == "mini_val" and report["meta"]["video_module"] is False
    assert report["meta"]["frames"] > 4 * report["meta"]["keyframes"] > 0, "sweeps run too (warm temporal state)"
    seg, road = report["segmentation"], report["road"]
    assert isinstance(seg, dict) and 0.0 <= seg["mIoU"] <= 1.0 and set(seg["per_class_IoU"]) >= {"road", "vehicle"}
    assert isinstance(road, dict) and set(road["chamfer_AP"]) == {"lane_divider", "road_edge"}
    assert set(road["chamfer_AP"]["road_edge"]) == {"0.5", "1.0", "1.5"}
    assert isinstance(report["detection"], dict) and "NDS" in report["detection"]


def test_sim_ground_truth_as_predictions_scores_perfectly(sim_dataset, sim_nusc, tmp_path):
    from lab.devkit import run_detection_eval
    from replay.nuscenes.submission import ground_truth_results, write_submission

    results = ground_truth_results(sim_nusc, "mini_val")
    present = {b["detection_name"] for boxes in results.values() for b in boxes}
    path = write_submission(tmp_path / "gt.json", results)
    summary = run_detection_eval(sim_nusc, path, "mini_val")
    # the devkit scores a class without ground truth in the split as AP 0 and TP errors 1, so a perfect detector
    # reaches NDS = mAP = 1 only where all ten classes occur; the present classes must be perfect
    for name, ap in summary["per_class_AP"].items():
        assert ap == pytest.approx(1.0 if name in present else 0.0, abs=1e-6), name
    for name in present:
        errs = summary["per_class_tp_errors"][name]
        assert errs["trans_err"] < 1e-6 and errs["scale_err"] < 1e-6
        # the devkit does not score velocity for cones and barriers: their vel_err is NaN
        if name not in ("traffic_cone", "barrier"):
            assert errs["vel_err"] < 1e-6, name
    assert summary["mAP"] == pytest.approx(len(present) / 10, abs=1e-6)
