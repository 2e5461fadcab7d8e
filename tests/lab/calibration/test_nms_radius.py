"""Circle-NMS radius fit on the real scene: duplicates a fixed distance off each box are what a radius just
beyond that distance removes; clean predictions keep no radius."""
import math

import pytest

from tests.lab.test_evaluation import _gt_as_predictions


@pytest.fixture(scope="module")
def nusc(real_scene_root):
    from nuscenes.nuscenes import NuScenes

    return NuScenes("v1.0-trainval", str(real_scene_root), verbose=False)


def _fit(nusc, results, tmp_path, name):
    from lab.calibration.nms_radius import fit_nms_radii
    from lab.devkit import loaded_detection_eval
    from replay.nuscenes.submission import split_sample_tokens, write_submission

    ev = loaded_detection_eval(nusc, write_submission(tmp_path / name, results), "val")
    return {f.name: f for f in fit_nms_radii(ev, split_sample_tokens(nusc, "val"), [0.0] * 10, candidates=(0.0, 0.5, 1.5, 3.0))}


def test_duplicates_are_removed_by_the_radius_just_beyond_them(nusc, tmp_path):
    results = _gt_as_predictions(nusc, min_points=1)
    for boxes in results.values():
        duplicates = []
        for k, b in enumerate(boxes):
            b["detection_score"] = 0.3 + 0.7 * ((k * 0.618) % 1.0)  # spread, so duplicates rank among the boxes
            d = dict(b, detection_score=b["detection_score"] - 0.01)
            d["translation"] = [b["translation"][0] + 1.2 * math.cos(k), b["translation"][1] + 1.2 * math.sin(k), b["translation"][2]]
            duplicates.append(d)
        boxes += duplicates
    fits = _fit(nusc, results, tmp_path, "dup.json")
    for name in ("car", "pedestrian", "barrier"):
        f = fits[name]
        assert f.boxes > 0 and f.previous_radius == 0.0
        assert f.radius == 1.5  # 0.5 keeps the duplicates 1.2 m off; a larger radius can only take neighbours too
        assert f.previous_ap < 0.95 and f.ap > f.previous_ap + 0.05


def test_clean_predictions_keep_no_radius(nusc, tmp_path):
    fits = _fit(nusc, _gt_as_predictions(nusc, min_points=1), tmp_path, "gt.json")
    assert all(f.radius == 0.0 and f.ap == f.previous_ap for f in fits.values())  # equal APs: the smallest radius
    assert fits["car"].ap > 0.95


def test_split_sample_tokens_of_some_scenes(nusc):
    from replay.nuscenes.submission import split_sample_tokens

    everything = split_sample_tokens(nusc, "val")
    assert len(everything) == 40
    assert split_sample_tokens(nusc, "val", ["scene-0523"]) == everything
    assert split_sample_tokens(nusc, "val", ["scene-0001"]) == []  # a train scene: not of the split
