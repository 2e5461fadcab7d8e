"""Segmentation metrics against the lecture's formulas on a hand-made matrix; road IoU; MapTR Chamfer AP semantics."""
import math

import numpy as np
import pytest
import torch
from shapely.geometry import LineString

from lab.metrics import (
    average_precision,
    chamfer_ap,
    chamfer_distance,
    clip_to_window,
    confusion_matrix,
    line_outcomes,
    resample_polyline,
    road_iou,
    segmentation_scores,
)

CONF = [[5, 1, 0], [2, 3, 1], [0, 1, 7]]  # rows: ground truth i, columns: predicted j


def _maps_from_conf(conf):
    target, pred = [], []
    for i, row in enumerate(conf):
        for j, n in enumerate(row):
            target += [i] * n
            pred += [j] * n
    return torch.tensor(pred).reshape(4, 5), torch.tensor(target).reshape(4, 5)


def test_confusion_matrix_counts():
    pred, target = _maps_from_conf(CONF)
    assert confusion_matrix(pred, target, 3).tolist() == CONF
    # ignore_index drops those target pixels
    target2 = target.clone()
    target2[0, 0] = 255
    assert confusion_matrix(pred, target2, 3, ignore_index=255).sum() == 19
    with pytest.raises(ValueError, match="0..2"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)


def test_scores_by_hand():
    s = segmentation_scores(torch.tensor(CONF))
    # computed by hand: rows 6, 6, 8; columns 7, 5, 8; diagonal 5, 3, 7; total 20
    assert s["PA"] == pytest.approx(15 / 20)
    assert s["MPA"] == pytest.approx((5 / 6 + 3 / 6 + 7 / 8) / 3)
    assert s["mIoU"] == pytest.approx((5 / 8 + 3 / 8 + 7 / 9) / 3)
    assert s["FWIoU"] == pytest.approx((6 * 5 / 8 + 6 * 3 / 8 + 8 * 7 / 9) / 20)
    torch.testing.assert_close(s["iou"], torch.tensor([5 / 8, 3 / 8, 7 / 9], dtype=torch.float64))


def test_scores_equal_lecture_formulas_on_random_matrix():
    rng = np.random.default_rng(0)
    p = rng.integers(1, 50, size=(5, 5))
    k1 = range(5)
    tot = sum(p[i][j] for i in k1 for j in k1)
    pa = sum(p[i][i] for i in k1) / tot
    mpa = sum(p[i][i] / sum(p[i][j] for j in k1) for i in k1) / 5
    iou = [p[i][i] / (sum(p[i][j] for j in k1) + sum(p[j][i] for j in k1) - p[i][i]) for i in k1]
    fwiou = sum(sum(p[i][j] for j in k1) * iou[i] for i in k1) / tot
    s = segmentation_scores(torch.tensor(p))
    assert (s["PA"], s["MPA"], s["mIoU"], s["FWIoU"]) == pytest.approx((pa, mpa, sum(iou) / 5, fwiou))


def test_absent_class_left_out_of_means():
    s = segmentation_scores(torch.tensor([[4, 0, 0], [0, 0, 0], [1, 0, 5]]))
    assert math.isnan(s["iou"][1].item())
    assert s["mIoU"] == pytest.approx((4 / 5 + 5 / 6) / 2)
    assert s["MPA"] == pytest.approx((1 + 5 / 6) / 2)


def test_road_iou():
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    pred = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, 0, :] = True  # 4 px
    pred[0, 0, :2] = True
    pred[0, 1, :2] = True  # 2 hit, 2 extra -> 2 / 6
    iou = road_iou(pred, gt)
    assert iou[0].item() == pytest.approx(2 / 6) and math.isnan(iou[1].item())
    assert road_iou(pred[None].repeat(3, 1, 1, 1), gt[None].repeat(3, 1, 1, 1))[0].item() == pytest.approx(2 / 6)
    assert road_iou(gt[0], gt[0]).item() == 1.0


def test_resample_and_chamfer():
    pts = resample_polyline(np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]), 21)
    assert len(pts) == 21 and np.allclose(np.linalg.norm(np.diff(pts, axis=0), axis=1), 1.0)
    a = resample_polyline(np.array([[0.0, 0.0], [20.0, 0.0]]))
    assert chamfer_distance(a, a) == 0.0
    assert chamfer_distance(a, a + [0.0, 0.7]) == pytest.approx(0.7)


def _line(y, x0=0.0, x1=20.0):
    return np.array([[x0, y], [x1, y]])


def test_chamfer_ap_perfect_and_shifted():
    gt = [{"lane_divider": [_line(0), _line(6)], "road_edge": [_line(-5)]}, {"lane_divider": [_line(1)], "road_edge": []}]
    perfect = [{k: [(l, 0.9) for l in v] for k, v in f.items()} for f in gt]
    r = chamfer_ap(perfect, gt)
    assert r["mAP"] == 1.0 and all(v == 1.0 for c in r["ap"].values() for v in c.values())
    for shift, expected in ((0.7, {0.5: 0.0, 1.0: 1.0, 1.5: 1.0}), (1.2, {0.5: 0.0, 1.0: 0.0, 1.5: 1.0}), (2.0, {0.5: 0.0, 1.0: 0.0, 1.5: 0.0})):
        shifted = [{k: [(l + [0.0, shift], 0.9) for l in v] for k, v in f.items()} for f in gt]
        r = chamfer_ap(shifted, gt)
        for c in ("lane_divider", "road_edge"):
            assert r["ap"][c] == pytest.approx(expected)
        assert r["mAP"] == pytest.approx(np.mean(list(expected.values())))


def test_chamfer_ap_ranking_duplicates_and_missing():
    gt = [{"lane_divider": [_line(0)], "road_edge": []}]
    # a low-scored false positive after the true positive does not lower AP
    assert chamfer_ap([{"lane_divider": [(_line(0), 0.9), (_line(8), 0.1)]}], gt)["ap"]["lane_divider"][0.5] == 1.0
    # a high-scored false positive first halves the precision at full recall
    assert chamfer_ap([{"lane_divider": [(_line(0), 0.5), (_line(8), 0.9)]}], gt)["ap"]["lane_divider"][0.5] == pytest.approx(0.5)
    # a duplicate of a matched line is a false positive; a missed line caps recall
    gt2 = [{"lane_divider": [_line(0), _line(6)]}]
    r = chamfer_ap([{"lane_divider": [(_line(0), 0.9), (_line(0.1), 0.8)]}], gt2)
    assert r["ap"]["lane_divider"][0.5] == pytest.approx(0.5)
    # road_edge has no ground truth anywhere: NaN, left out of mAP
    assert math.isnan(r["class_ap"]["road_edge"]) and r["mAP"] == pytest.approx(0.5)


def test_average_precision_by_hand():
    # ranked TP, FP, TP with 3 ground truths: precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3
    # envelope: recall (0, 1/3] at 1, (1/3, 2/3] at 2/3 -> AP = 1/3 + 1/3 * 2/3
    ap = average_precision(np.array([True, False, True]), np.array([0.9, 0.8, 0.7]), 3)
    assert ap == pytest.approx(1 / 3 + 2 / 9)


def test_line_outcomes_tell_matched_traced_and_missed_lines():
    # A road edge cut in two by a side street (x 20..30 m), drawn as one line through the gap: the raster
    # has both pieces, yet neither is a Chamfer match. A divider found exactly, one nowhere near a line.
    gt = [{"road_edge": [_line(-5, 0, 20), _line(-5, 30, 50)], "lane_divider": [_line(0, 0, 50), _line(20, 0, 50)]}]
    pred = [{"road_edge": [(_line(-5.2, 0, 50), 0.9)], "lane_divider": [(_line(0.1, 0, 50), 0.8)]}]
    out = line_outcomes(pred, gt, threshold=1.0)
    assert out["road_edge"] == {"lines": 2, "matched": 0.0, "traced": 1.0, "missed": 0.0}
    assert out["lane_divider"] == {"lines": 2, "matched": 0.5, "traced": 0.0, "missed": 0.5}
    # matched lines are exactly chamfer_ap's true positives: the same line found twice is one match
    twice = [{"lane_divider": [(_line(0.1, 0, 50), 0.8), (_line(0.2, 0, 50), 0.7)]}]
    assert line_outcomes(twice, gt, threshold=1.0)["lane_divider"]["matched"] == 0.5
    # a piece shifted beyond the threshold is neither matched nor traced; shares add up to one
    far = line_outcomes([{"road_edge": [(_line(-7, 0, 50), 0.9)]}], gt, threshold=1.0)["road_edge"]
    assert far == {"lines": 2, "matched": 0.0, "traced": 0.0, "missed": 1.0}
    assert math.isnan(line_outcomes(pred, [{}], threshold=1.0)["road_edge"]["matched"])


def test_clip_to_window_keeps_the_pieces_inside():
    # a divider from 50 m behind to 50 m ahead: the 60 m inside the window remain
    (piece,) = clip_to_window(_line(2.0, -50.0, 50.0), 30.0, 15.0)
    assert LineString(piece).length == pytest.approx(60.0)
    assert np.abs(piece[:, 0]).max() == pytest.approx(30.0) and np.allclose(piece[:, 1], 2.0)
    # a line that leaves the window sideways and comes back is two instances, in order along it
    detour = np.array([[-20.0, 0.0], [-10.0, 0.0], [-10.0, 25.0], [10.0, 25.0], [10.0, 0.0], [20.0, 0.0]])
    first, second = clip_to_window(detour, 30.0, 15.0)
    assert LineString(first).length == pytest.approx(10.0 + 15.0) and LineString(second).length == pytest.approx(15.0 + 10.0)
    assert first[0] == pytest.approx([-20.0, 0.0]) and second[-1] == pytest.approx([20.0, 0.0])
    # outside, or touching the border in one point: nothing; inside: unchanged
    assert clip_to_window(_line(20.0), 30.0, 15.0) == []
    assert clip_to_window(np.array([[0.0, 15.0], [0.0, 30.0]]), 30.0, 15.0) == []
    inside = np.array([[0.0, 0.0], [5.0, 1.0], [9.0, -3.0]])
    (same,) = clip_to_window(inside, 30.0, 15.0)
    assert np.array_equal(same, inside)
