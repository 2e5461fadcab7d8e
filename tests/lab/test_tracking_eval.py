"""The devkit's TrackingEval on tracks from lab.tracking_eval: the real scene's annotations as tracks."""
from __future__ import annotations

import json

import pytest
import torch

from lab.model_run import submission_entries
from lab.tracking_eval import TRACKING_CONFIG, format_tracking, run_tracking_eval
from perception.structures import Detections
from replay.nuscenes.submission import ids_by_score, tracking_entries
from schema.classes import DETECTION_NAMES, TRACKING_NAMES


def _annotation_tracks(real_scene_root, swap_after: int | None = None) -> dict[str, list[dict]]:
    """The real scene's visible annotations (ego frame, from our ground-truth reader, through submission_entries)
    as tracking boxes whose track ids are their instances; with `swap_after` K, the ids of the two most-seen cars trade places from
    the K-th sample on (an identity switch in each track)."""
    from nuscenes.nuscenes import NuScenes

    from lab.groundtruth import GroundTruth
    from replay.nuscenes.submission import split_sample_tokens
    from schema.messages import Pose

    nusc = NuScenes("v1.0-trainval", str(real_scene_root), verbose=False)
    reader = GroundTruth(nusc, min_points=1)
    frames = []
    for token in split_sample_tokens(nusc, "val"):
        sample = nusc.get("sample", token)
        pose = Pose.from_record(nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"]))
        frames.append((token, pose, reader.boxes_at(sample["scene_token"], sample["timestamp"], pose, sample_token=token)))
    number = {}  # instance token -> integer track id
    for _, _, gt in frames:
        for inst in gt.instance_tokens:
            number.setdefault(inst, len(number))
    cars = [inst for _, _, gt in frames for inst, label in zip(gt.instance_tokens, gt.labels)
            if DETECTION_NAMES[label] == "car"]
    a, b = sorted(set(cars), key=cars.count)[-2:]
    results = {}
    for k, (token, pose, gt) in enumerate(frames):
        ids = [number[inst] for inst in gt.instance_tokens]
        if swap_after is not None and k >= swap_after:
            ids = [number[b] if inst == a else number[a] if inst == b else i for inst, i in zip(gt.instance_tokens, ids)]
        dets = Detections(torch.from_numpy(gt.boxes), torch.linspace(1.0, 0.5, len(gt)), torch.from_numpy(gt.labels))
        results[token] = tracking_entries(submission_entries(dets, token, pose), ids_by_score(dets.scores.numpy(), ids))
    return results


@pytest.fixture(scope="module")
def perfect(real_scene_root, tmp_path_factory):
    from replay.nuscenes.submission import write_submission

    path = write_submission(tmp_path_factory.mktemp("tracks") / "tracks.json", _annotation_tracks(real_scene_root))
    return path, run_tracking_eval(real_scene_root, "v1.0-trainval", path, "val", path.parent / "eval")


def test_annotations_as_tracks_score_perfectly(perfect):
    path, summary = perfect
    assert summary["AMOTA"] == pytest.approx(1.0, abs=1e-6) and summary["MOTA"] == pytest.approx(1.0, abs=1e-6)
    assert summary["recall"] == pytest.approx(1.0, abs=1e-6) and summary["IDS"] == 0 and summary["FRAG"] == 0
    assert summary["AMOTP"] < 1e-3  # the boxes went ego -> global exactly
    saved = json.loads((path.parent / "eval" / "metrics_summary.json").read_text())
    assert saved["amota"] == summary["AMOTA"]
    assert "AMOTA 1.0000" in "\n".join(format_tracking(summary))


def test_swapped_track_ids_are_identity_switches(real_scene_root, tmp_path, perfect):
    """The same boxes with two cars' ids traded halfway: the devkit counts the switches and MOTA drops."""
    from replay.nuscenes.submission import write_submission

    path = write_submission(tmp_path / "swapped.json", _annotation_tracks(real_scene_root, swap_after=20))
    summary = run_tracking_eval(real_scene_root, "v1.0-trainval", path, "val")
    assert summary["IDS"] >= 2 and summary["MOTA"] < perfect[1]["MOTA"]
    assert summary["recall"] == pytest.approx(1.0, abs=1e-6)  # every box still found


def test_tracking_entries_keep_tracking_classes_best_first_with_prefixed_ids():
    from schema.messages import Pose

    names = ["car", "traffic_cone", "pedestrian", "barrier", "truck"]
    boxes = torch.zeros(5, 9)
    boxes[:, 0] = torch.arange(5.0)
    boxes[:, 3:6] = 1.0
    dets = Detections(boxes, torch.tensor([0.2, 0.9, 0.7, 0.5, 0.8]),
                      torch.tensor([DETECTION_NAMES.index(n) for n in names]))
    ids = [10, 11, 12, 13, 14]
    submitted = submission_entries(dets, "s", Pose.identity())  # best score first
    entries = tracking_entries(submitted, ids_by_score(dets.scores.numpy(), ids), track_prefix="3-")
    assert [e["tracking_name"] for e in entries] == ["truck", "pedestrian", "car"]  # no cone, no barrier
    assert [e["tracking_id"] for e in entries] == ["3-14", "3-12", "3-10"]
    assert [e["translation"][0] for e in entries] == [4.0, 2.0, 0.0]
    top_two = submission_entries(dets, "s", Pose.identity(), max_boxes=2)  # the cone and the truck
    assert [e["tracking_id"] for e in tracking_entries(top_two, ids_by_score(dets.scores.numpy(), ids))] == ["14"]
    with pytest.raises(ValueError, match="5 boxes but 4 track ids"):
        ids_by_score(dets.scores.numpy(), [1, 2, 3, 4])


def test_a_file_of_another_kind_is_named(tmp_path, perfect):
    from lab.tracking_eval import tracking_submission

    path, _ = perfect
    assert tracking_submission(path) == json.loads(path.read_text())["results"]
    tracks = json.loads(path.read_text())
    token = next(t for t, boxes in tracks["results"].items() if boxes)
    tracks["results"][token][0]["tracking_name"] = "traffic_cone"
    (tmp_path / "cone.json").write_text(json.dumps(tracks))
    with pytest.raises(ValueError, match="unknown tracking_name 'traffic_cone'"):
        tracking_submission(tmp_path / "cone.json")
    del tracks["results"][token][0]["tracking_id"]
    (tmp_path / "untracked.json").write_text(json.dumps(tracks))
    with pytest.raises(ValueError, match="is not a tracking submission: its boxes lack tracking_id"):
        tracking_submission(tmp_path / "untracked.json")


def test_tracking_names_are_the_devkit_configs_and_an_empty_file_is_not_scored(tmp_path):
    from lab.devkit import devkit_config

    assert set(TRACKING_NAMES) == set(devkit_config(TRACKING_CONFIG).tracking_names)
    assert devkit_config(TRACKING_CONFIG, max_range=20.0).class_range == dict.fromkeys(TRACKING_NAMES, 20.0)
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"meta": {}, "results": {"s": []}}))
    assert run_tracking_eval(tmp_path, "v1.0-trainval", path, "val").startswith("not available")
    assert format_tracking("not available (x)") == ["tracking: not available (x)"]
