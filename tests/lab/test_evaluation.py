"""Evaluation glue: DetectionEval runner on the real scene (ground truth as predictions), metric accumulation."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lab.devkit import complete_results, eval_set_name, evaluate_results_file, run_detection_eval


@pytest.fixture(scope="module")
def nusc(real_scene_root):
    from nuscenes.nuscenes import NuScenes

    return NuScenes("v1.0-trainval", str(real_scene_root), verbose=False)


def _ground_truth_per_sample(nusc, min_points: int):
    """(sample token, ego pose, our ego-frame ground truth with >= min_points lidar points) of every val sample."""
    from lab.groundtruth import GroundTruth
    from replay.nuscenes.submission import split_sample_tokens
    from schema.messages import Pose

    reader = GroundTruth(nusc, min_points=min_points)
    for token in split_sample_tokens(nusc, "val"):
        sample = nusc.get("sample", token)
        pose = Pose.from_record(nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"]))
        yield token, pose, reader.boxes_at(sample["scene_token"], sample["timestamp"], pose, sample_token=token)


def _gt_as_predictions(nusc, min_points: int) -> dict[str, list[dict]]:
    """Our own ego-frame ground truth, taken back to global and written in the official format."""
    from lab.groundtruth import boxes_to_global
    from replay.nuscenes.submission import detection_entry
    from schema.classes import DETECTION_NAMES

    results = {}
    for token, pose, gt in _ground_truth_per_sample(nusc, min_points):
        entries = []
        for box, label, attr in zip(boxes_to_global(gt.boxes, pose), gt.labels, gt.attribute_names):
            entries.append(detection_entry(token, box.center, box.wlh, box.orientation.elements, box.velocity[:2],
                                           DETECTION_NAMES[label], 1.0, attr))
        results[token] = entries
    return results


def test_ground_truth_as_predictions_reproduces_reference_scores(nusc, tmp_path):
    """Every annotation as a score-1.0 prediction: NDS 0.891 / mAP 0.782 (README of the real scene):
    the empty (zero-point) boxes the evaluation drops from the ground truth become tied false positives."""
    from replay.nuscenes.submission import write_submission

    path = write_submission(tmp_path / "gt.json", _gt_as_predictions(nusc, min_points=0))
    summary = run_detection_eval(nusc, path, "val", tmp_path / "eval")
    assert summary["num_samples"] == 40
    assert summary["NDS"] == pytest.approx(0.891, abs=0.003)
    assert summary["mAP"] == pytest.approx(0.782, abs=0.003)
    assert summary["mATE"] < 1e-3 and summary["mASE"] < 1e-3 and summary["mAVE"] < 1e-3 and summary["mAAE"] == 0
    assert summary["mAOE"] < 0.01  # the ego's pitch/roll is dropped by the ego-frame yaw
    assert set(summary["per_class_AP"]) >= {"car", "pedestrian", "barrier"}
    saved = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text())
    assert saved["nd_score"] == summary["NDS"]


def test_visible_ground_truth_scores_perfect_and_missing_samples_are_completed(nusc, tmp_path):
    from replay.nuscenes.submission import write_submission

    results = _gt_as_predictions(nusc, min_points=1)
    dropped = sorted(results)[:5]
    for t in dropped:  # a results file that leaves out samples is completed with empty lists
        del results[t]
    path = write_submission(tmp_path / "gt.json", results)
    summary = evaluate_results_file(nusc, path, "val", tmp_path / "eval")
    assert summary["samples_without_predictions"] == 5
    assert 0.8 < summary["mAP"] < 1.0  # recall lost on the dropped samples
    full = write_submission(tmp_path / "full.json", _gt_as_predictions(nusc, min_points=1))
    perfect = evaluate_results_file(nusc, full, "val", tmp_path / "eval2")
    assert perfect["NDS"] == pytest.approx(1.0, abs=1e-3) and perfect["mAP"] == pytest.approx(1.0, abs=1e-3)


def test_eval_set_names(nusc):
    assert eval_set_name("v1.0-mini", "val") == "mini_val"
    assert eval_set_name("v1.0-trainval", "val") == "val"
    with pytest.raises(ValueError, match="unknown split"):
        eval_set_name("v1.0-trainval", "nope")
    assert len(complete_results(nusc, {}, "val")) == 40
    with pytest.raises(ValueError, match="no sample"):
        complete_results(nusc, {}, "train")


def test_segmentation_accumulation_equals_the_concatenation():
    import torch

    from lab.accumulators import SegmentationAccumulator
    from lab.metrics import confusion_matrix, segmentation_scores

    rng = np.random.default_rng(0)
    acc = SegmentationAccumulator(num_classes=5, class_names=list("abcde"))
    preds, targets = [], []
    for k in range(4):  # frames of different sizes, some with ignored pixels; class 4 never occurs
        shape = (3, 6 + k, 9) if k % 2 else (7, 5)
        target = rng.integers(0, 4, size=shape)
        pred = np.where(rng.random(shape) < 0.7, target, rng.integers(0, 4, size=shape))
        target[rng.random(shape) < 0.1] = 255
        acc.update(torch.from_numpy(pred), torch.from_numpy(target))
        preds.append(pred.reshape(-1))
        targets.append(target.reshape(-1))
    ref = segmentation_scores(confusion_matrix(torch.from_numpy(np.concatenate(preds)), torch.from_numpy(np.concatenate(targets)), 5, 255))
    got = acc.result()
    for key in ("PA", "MPA", "mIoU", "FWIoU"):
        assert got[key] == pytest.approx(ref[key], abs=1e-12)
    assert got["per_class_IoU"]["e"] is None and got["per_class_IoU"]["a"] == pytest.approx(float(ref["iou"][0]))
    assert got["images"] == 1 + 3 + 1 + 3
    assert SegmentationAccumulator().result() is None


def test_road_accumulation_equals_the_concatenation():
    import torch

    from lab.accumulators import RoadAccumulator
    from lab.metrics import chamfer_ap, line_outcomes, road_iou

    rng = np.random.default_rng(1)
    acc = RoadAccumulator()
    pmasks, gmasks, preds, gts = [], [], [], []
    for f in range(5):
        g = rng.random((2, 16, 16)) < 0.2
        p = np.where(rng.random((2, 16, 16)) < 0.8, g, rng.random((2, 16, 16)) < 0.2)
        gt_lines = {c: [np.cumsum(rng.normal(size=(6, 2)), 0) * 3 for _ in range(rng.integers(1, 4))] for c in ("lane_divider", "road_edge")}
        pred_lines = {c: [(l + rng.normal(scale=0.4, size=l.shape), float(rng.random())) for l in ls] + [(rng.normal(size=(4, 2)) * 20, 0.3)]
                      for c, ls in gt_lines.items()}
        acc.update(p, g, pred_lines, gt_lines)
        pmasks.append(p)
        gmasks.append(g)
        preds.append(pred_lines)
        gts.append(gt_lines)
    # IoU: the same as on the frames concatenated side by side
    ref_iou = road_iou(torch.from_numpy(np.concatenate(pmasks, axis=2)), torch.from_numpy(np.concatenate(gmasks, axis=2)))
    got = acc.result()
    assert [got["IoU"][c] for c in ("lane_divider", "road_edge")] == pytest.approx(ref_iou.tolist())
    # Chamfer AP: the same as one big frame with the frames placed 10 km apart (no cross-frame matches)
    shift = lambda f: np.array([10_000.0 * f, 0.0])  # noqa: E731
    big_pred = {c: [(l + shift(f), s) for f, fr in enumerate(preds) for l, s in fr[c]] for c in ("lane_divider", "road_edge")}
    big_gt = {c: [l + shift(f) for f, fr in enumerate(gts) for l in fr[c]] for c in ("lane_divider", "road_edge")}
    ref = chamfer_ap([big_pred], [big_gt])
    for c in ("lane_divider", "road_edge"):
        for t in (0.5, 1.0, 1.5):
            assert got["chamfer_AP"][c][str(t)] == pytest.approx(ref["ap"][c][t], abs=1e-12)
    assert got["chamfer_mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    assert 0.0 < got["chamfer_mAP"] < 1.0
    # What became of each line, at the middle threshold: the same as on the one big frame
    ref_outcomes = line_outcomes([big_pred], [big_gt], 1.0)
    assert got["line_outcomes"]["threshold_m"] == 1.0
    for c in ("lane_divider", "road_edge"):
        assert got["line_outcomes"][c] == pytest.approx(ref_outcomes[c])
    assert RoadAccumulator().result() is None


def test_road_accumulation_scores_the_maptr_window_on_clipped_lines():
    """Lines found exactly within +-30 m x +-15 m and wrongly beyond it: perfect in the window only; the
    window's figure is chamfer_ap on every line clipped to it."""
    from lab.accumulators import RoadAccumulator
    from lab.metrics import chamfer_ap, clip_to_window

    line = lambda y, x0, x1: np.array([[x0, y], [x1, y]])  # noqa: E731
    gt = {"lane_divider": [line(2.0, -50.0, 50.0), line(30.0, -40.0, 40.0)], "road_edge": [line(-6.0, -50.0, 50.0)]}
    # the near parts exactly; beyond |x| 30 m bent away by 10 m; a ghost divider far to the side
    bent = lambda y: np.array([[-50.0, y + 10.0], [-30.0, y], [30.0, y], [50.0, y + 10.0]])  # noqa: E731
    pred = {"lane_divider": [(bent(2.0), 0.9), (line(-40.0, -40.0, 40.0), 0.8)], "road_edge": [(bent(-6.0), 0.7)]}
    masks = np.zeros((2, 4, 4), dtype=bool)
    acc = RoadAccumulator()
    acc.update(masks, masks, pred, gt)
    got = acc.result()
    assert got["chamfer_mAP"] == 0.0  # over the whole grid the bends put every line beyond 1.5 m
    assert got["window"]["half_extent_m"] == {"x": 30.0, "y": 15.0}
    assert got["window"]["chamfer_mAP"] == 1.0
    clip = lambda ls: [p for l in ls for p in clip_to_window(l, 30.0, 15.0)]  # noqa: E731
    ref = chamfer_ap([{c: [(p, s) for l, s in v for p in clip([l])] for c, v in pred.items()}],
                     [{c: clip(v) for c, v in gt.items()}])
    assert got["window"]["chamfer_mAP"] == ref["mAP"]
    unwindowed = RoadAccumulator(window=None)
    unwindowed.update(masks, masks, pred, gt)
    assert "window" not in unwindowed.result()


def test_submission_entries_from_ego_detections(nusc, tmp_path):
    """Ego-frame Detections (here: the visible ground truth) -> submission boxes -> DetectionEval: perfect mAP."""
    import torch

    from lab.model_run import submission_entries
    from perception.structures import Detections
    from replay.nuscenes.submission import write_submission

    results = {}
    for token, pose, gt in _ground_truth_per_sample(nusc, min_points=1):
        scores = torch.linspace(1.0, 0.5, len(gt))  # distinct scores: no ties
        dets = Detections(torch.from_numpy(gt.boxes), scores, torch.from_numpy(gt.labels))
        results[token] = submission_entries(dets, token, pose)
        assert [b["detection_score"] for b in results[token]] == sorted((b["detection_score"] for b in results[token]), reverse=True)
    summary = run_detection_eval(nusc, write_submission(tmp_path / "r.json", results), "val")
    assert summary["mAP"] == pytest.approx(1.0, abs=1e-6)
    assert summary["mATE"] < 1e-3 and summary["mASE"] < 1e-3 and summary["mAVE"] < 1e-3 and summary["mAOE"] < 0.01
    assert summary["mAAE"] < 0.5  # attributes guessed from speed and class, as the runtime writes them


def test_max_range_scores_only_what_lies_within_it(nusc, tmp_path):
    """`--max-range`: the ground truth within 20 m, submitted as detections, is a perfect car detector
    within 20 m and a poor one over the devkit's 50 m."""
    import torch

    from lab.model_run import submission_entries
    from perception.structures import Detections
    from replay.nuscenes.submission import write_submission
    from schema.classes import DETECTION_NAMES

    results, far_cars = {}, 0
    for token, pose, gt in _ground_truth_per_sample(nusc, min_points=1):
        dist = np.hypot(gt.boxes[:, 0], gt.boxes[:, 1])
        near = dist < 20.0
        far_cars += int(((dist >= 20.0) & (dist < 50.0) & (gt.labels == DETECTION_NAMES.index("car"))).sum())
        dets = Detections(torch.from_numpy(gt.boxes[near]), torch.linspace(1.0, 0.5, int(near.sum())),
                          torch.from_numpy(gt.labels[near]))
        results[token] = submission_entries(dets, token, pose)
    path = write_submission(tmp_path / "r.json", results)
    assert far_cars > 0
    assert run_detection_eval(nusc, path, "val", max_range=20.0)["per_class_AP"]["car"] == pytest.approx(1.0, abs=1e-3)
    assert run_detection_eval(nusc, path, "val")["per_class_AP"]["car"] < 0.9


def test_matched_attributes_pairs_each_prediction_with_its_ground_truth(nusc, tmp_path):
    """The visible ground truth as predictions: every box in range matches its own annotation (speed and
    attribute its own); moved 1 m, they match within 2 m, and within 0.9 m only where another box stands near."""
    from lab.devkit import loaded_detection_eval, matched_attributes
    from replay.nuscenes.submission import write_submission
    from schema.attributes import GROUP_OF_CLASS

    results = _gt_as_predictions(nusc, min_points=1)
    matched = matched_attributes(loaded_detection_eval(nusc, write_submission(tmp_path / "gt.json", results), "val"))
    summary = run_detection_eval(nusc, tmp_path / "gt.json", "val")
    assert summary["mAP"] == pytest.approx(1.0, abs=1e-3)  # so every box in range is a true positive
    expected: dict[str, list[tuple[float, str]]] = {}
    for boxes in results.values():
        for b in boxes:
            group = GROUP_OF_CLASS.get(b["detection_name"])
            if group is not None:
                expected.setdefault(group, []).append((round(float(np.hypot(*b["velocity"])), 6), b["attribute_name"]))
    for group, (speeds, gt_attributes) in matched.items():
        got = sorted(zip(np.round(speeds, 6).tolist(), gt_attributes))
        assert len(got) > 0 and set(got) <= set(expected[group])  # the boxes beyond the class range are filtered
        assert all(a in {"vehicle.moving", "vehicle.parked", "vehicle.stopped", "pedestrian.moving",
                         "pedestrian.standing", "pedestrian.sitting_lying_down", "cycle.with_rider",
                         "cycle.without_rider"} for _, a in got)
    for boxes in results.values():
        for b in boxes:
            b["translation"] = [b["translation"][0] + 1.0, *b["translation"][1:]]
    moved = write_submission(tmp_path / "moved.json", results)
    moved_ev = loaded_detection_eval(nusc, moved, "val")
    for group, (speeds, _) in matched_attributes(moved_ev).items():  # a few boxes moved out of range
        assert 0.95 * len(matched[group][0]) <= len(speeds) <= len(matched[group][0])
    near = matched_attributes(moved_ev, dist_th=0.9)  # below the shift: only another box can match
    assert len(near["vehicle"][0]) == len(near["cycle"][0]) == 0
    assert len(near["pedestrian"][0]) <= 0.1 * len(matched["pedestrian"][0])  # a neighbour in a group, now and then


def test_match_true_positives_equals_the_devkit_loop(nusc, tmp_path):
    """The vectorised matching against accumulate's own loop (center_distance, strict '<'), boxes moved 1.2 m."""
    from nuscenes.eval.common.utils import center_distance

    from lab.devkit import loaded_detection_eval, match_true_positives
    from replay.nuscenes.submission import write_submission
    from schema.classes import DETECTION_NAMES

    results = _gt_as_predictions(nusc, min_points=1)
    for boxes in results.values():
        for k, b in enumerate(boxes):
            b["translation"] = [b["translation"][0] + 1.2 * math.cos(k), b["translation"][1] + 1.2 * math.sin(k), b["translation"][2]]
    ev = loaded_detection_eval(nusc, write_submission(tmp_path / "moved.json", results), "val")
    matched = 0
    for name in DETECTION_NAMES:
        preds = sorted((b for b in ev.pred_boxes.all if b.detection_name == name), key=lambda b: -b.detection_score)
        taken, expected = set(), []
        for pred in preds:
            best, best_dist = None, math.inf
            for i, gt in enumerate(ev.gt_boxes[pred.sample_token]):
                if gt.detection_name == name and (pred.sample_token, i) not in taken and center_distance(gt, pred) < best_dist:
                    best, best_dist = i, center_distance(gt, pred)
            if best is not None and best_dist < 2.0:
                taken.add((pred.sample_token, best))
                expected.append((pred, ev.gt_boxes[pred.sample_token][best]))
        got = match_true_positives(ev, name, 2.0)
        assert [(id(p), id(g)) for p, g in got] == [(id(p), id(g)) for p, g in expected]
        matched += len(got)
    assert 0 < matched < len(ev.pred_boxes.all)  # some boxes matched, some moved beyond their ground truth's reach


def test_speed_bins_against_a_loop():
    from lab.devkit import speed_bins

    rng = np.random.default_rng(0)
    gt = rng.normal(0, 6, (300, 2))
    gt[:40] *= 0.01  # some standing still
    gt[5] = np.nan  # unknown velocity: left out
    pred = gt * 0.7 + rng.normal(0, 0.5, (300, 2))
    edges = (0.0, 0.5, 3.0, 6.0, 10.0, math.inf)
    bins = speed_bins(gt, pred, edges)
    assert sum(b["boxes"] for b in bins) == 299
    for b, lo, hi in zip(bins, edges[:-1], edges[1:]):
        rows = [(np.hypot(*g), np.hypot(*p), np.hypot(*(g - p))) for g, p in zip(gt, pred)
                if np.isfinite(g).all() and lo <= np.hypot(*g) < hi]
        assert b["boxes"] == len(rows) and b["gt_speed_mps"] == [lo, None if hi == math.inf else hi]
        if rows:
            for key, col in (("gt_speed_mean", 0), ("pred_speed_mean", 1), ("error_mean", 2)):
                assert b[key] == pytest.approx(np.mean([r[col] for r in rows]))
        else:
            assert b["gt_speed_mean"] is None and b["error_mean"] is None


def test_velocity_by_speed_shows_speeds_pulled_toward_zero(nusc, tmp_path):
    """Ground truth as predictions at half its velocity: each bin predicts half the true speed, off by the other half."""
    from replay.nuscenes.submission import write_submission

    results = _gt_as_predictions(nusc, min_points=1)
    for boxes in results.values():
        for b in boxes:
            b["velocity"] = [0.5 * v for v in b["velocity"]]
    summary = run_detection_eval(nusc, write_submission(tmp_path / "half.json", results), "val")
    by_speed = summary["velocity_by_speed"]
    assert "barrier" not in by_speed and "traffic_cone" not in by_speed
    assert by_speed["car"][0]["boxes"] > 0 and sum(b["boxes"] for b in by_speed["car"][1:]) > 0
    for bins in by_speed.values():
        for b in bins:
            if b["boxes"]:
                assert b["pred_speed_mean"] == pytest.approx(0.5 * b["gt_speed_mean"], rel=1e-3, abs=1e-3)
                assert b["error_mean"] == pytest.approx(0.5 * b["gt_speed_mean"], rel=1e-3, abs=1e-3)
    from lab.report import format_report

    text = format_report({"detection": summary, "segmentation": "not available", "road": "not available"})
    car = by_speed["car"][0]
    assert f"car: 0-0.5: {car['boxes']}: {car['gt_speed_mean']:.2f} -> {car['pred_speed_mean']:.2f}" in text
    # ground truth as predictions is placed exactly: AP is the same at every match distance
    car_aps = summary["AP_per_distance"]["car"]
    assert len(set(car_aps.values())) == 1
    assert "AP at match distance 0.5/1/2/4 m: car " + "/".join([f"{car_aps[0.5]:.2f}"] * 4) in text


def test_range_bins_split_the_error_along_and_across_the_ray():
    """Predictions built as ground truth + a along the ray + b across it: the bins give back a and b."""
    from lab.devkit import range_bins

    rng = np.random.default_rng(1)
    r, theta = rng.uniform(1, 60, 400), rng.uniform(-np.pi, np.pi, 400)  # (N,)
    ray = np.stack([np.cos(theta), np.sin(theta)], axis=1)  # (N, 2)
    across_dir = np.stack([-ray[:, 1], ray[:, 0]], axis=1)  # (N, 2) the ray turned left
    along, across = rng.normal(0.2, 0.5, 400), rng.normal(0, 0.3, 400)
    gt = r[:, None] * ray
    pred = gt + along[:, None] * ray + across[:, None] * across_dir
    edges = (0.0, 10.0, 20.0, 30.0, 40.0, math.inf)
    bins = range_bins(gt, pred, edges)
    assert sum(b["boxes"] for b in bins) == 400
    for b, lo, hi in zip(bins, edges[:-1], edges[1:]):
        m = (r >= lo) & (r < hi)
        assert b["range_m"] == [lo, None if hi == math.inf else hi] and b["boxes"] == m.sum()
        assert b["along_mean"] == pytest.approx(along[m].mean())
        assert b["along_abs_mean"] == pytest.approx(np.abs(along[m]).mean())
        assert b["across_abs_mean"] == pytest.approx(np.abs(across[m]).mean())
        assert b["error_mean"] == pytest.approx(np.hypot(along[m], across[m]).mean())


def test_translation_by_range_sees_boxes_placed_too_far(nusc, tmp_path):
    """Real ground truth pushed 0.3 m away from the ego as predictions: every class, every range bin reports
    0.3 m along the ray and nothing across it (the devkit's ego offsets and ours agree)."""
    from lab.groundtruth import boxes_to_global
    from replay.nuscenes.submission import detection_entry, write_submission
    from schema.classes import DETECTION_NAMES

    results = {}
    for token, pose, gt in _ground_truth_per_sample(nusc, min_points=1):
        boxes = np.array(gt.boxes, dtype=np.float64)  # (N, 9) ego frame: x y z w l h yaw vx vy
        boxes[:, :2] *= (1 + 0.3 / np.linalg.norm(boxes[:, :2], axis=1))[:, None]
        entries = []
        for box, label, attr in zip(boxes_to_global(boxes, pose), gt.labels, gt.attribute_names):
            entries.append(detection_entry(token, box.center, box.wlh, box.orientation.elements, box.velocity[:2],
                                           DETECTION_NAMES[label], 1.0, attr))
        results[token] = entries
    summary = run_detection_eval(nusc, write_submission(tmp_path / "far.json", results), "val")
    by_range = summary["translation_by_range"]
    assert set(by_range) == set(DETECTION_NAMES)
    assert sum(b["boxes"] for b in by_range["car"][2:]) > 0  # cars beyond 20 m are in it
    for bins in by_range.values():
        for b in bins:
            if b["boxes"]:
                assert b["along_mean"] == pytest.approx(0.3, abs=1e-3) and b["error_mean"] == pytest.approx(0.3, abs=1e-3)
                assert b["across_abs_mean"] == pytest.approx(0.0, abs=1e-3)
    from lab.report import format_report

    car = by_range["car"][0]
    assert f"car: 0-10: {car['boxes']}: 0.30, 0.30, 0.00, +0.30" in format_report({"detection": summary, "segmentation": "-", "road": "-"})


def test_detection_metrics_of_in_memory_boxes_equal_the_devkit_on_their_file(nusc, tmp_path):
    """detection_metrics (no file written) == DetectionEval on the same boxes written out, for all samples and
    for a subset: the ground truth with shifted, rescored and dropped boxes."""
    from lab.devkit import detection_metrics, loaded_detection_eval, restricted
    from replay.nuscenes.submission import write_submission

    rng = np.random.default_rng(3)
    results = _gt_as_predictions(nusc, min_points=1)
    for token in results:
        kept = [b for b in results[token] if rng.random() > 0.2]
        for b in kept:
            b["translation"] = [b["translation"][0] + rng.normal(0, 0.7), b["translation"][1] + rng.normal(0, 0.7),
                                b["translation"][2]]
            b["detection_score"] = float(rng.random())
        results[token] = kept
    path = write_submission(tmp_path / "r.json", results)
    ev = loaded_detection_eval(nusc, path, "val")
    whole = run_detection_eval(nusc, path, "val")
    metrics = detection_metrics(ev, results, list(results))
    assert 0.2 < whole["NDS"] < 0.9
    assert metrics.nd_score == pytest.approx(whole["NDS"], abs=1e-12) and metrics.mean_ap == pytest.approx(whole["mAP"], abs=1e-12)
    half = sorted(results)[:20]
    path = write_submission(tmp_path / "half.json", {t: results[t] for t in half})
    sub = loaded_detection_eval(nusc, path, "val")
    sub.gt_boxes = restricted(sub.gt_boxes, half)
    sub.pred_boxes, sub.sample_tokens = restricted(sub.pred_boxes, half), half
    expected, _ = sub.evaluate()
    assert detection_metrics(ev, results, half).nd_score == pytest.approx(expected.nd_score, abs=1e-12)
    assert len(ev.pred_boxes.sample_tokens) == 40  # `ev` itself is untouched
