"""Per-class rotated-BEV NMS equals a brute-force greedy NMS written with Python loops and shapely (exact IoU of
every pair), and equals the previous dense torch implementation (batched_nms_bev_reference), decode included."""
import math

import pytest
import torch
from shapely.geometry import Polygon

from perception.boxes import bev_corners
from perception.detection import DetectionHead, DetectionHeadConfig
from perception.grid import BEVGrid
from perception.nms import batched_nms_bev, batched_nms_bev_reference, best_class, nms_bev, nms_bev_reference


def _iou(a, b) -> float:
    pa, pb = Polygon(bev_corners(a).tolist()), Polygon(bev_corners(b).tolist())
    return pa.intersection(pb).area / pa.union(pb).area


def brute_force_nms(boxes, scores, labels, thr, radii=None):
    """Per class: rank by (-score, index), keep a box unless its IoU with a kept one is > thr or its centre
    lies within the class's radius of that one's; then all kept boxes by (-score, label, index)."""
    keep = []
    for c in sorted(set(labels.tolist())):
        r = 0.0 if radii is None else radii[c]
        idx = [i for i in range(len(scores)) if labels[i].item() == c]
        idx.sort(key=lambda i: (-scores[i].item(), i))
        kept_c = []
        for i in idx:
            if all(_iou(boxes[i], boxes[k]) <= thr and math.dist(boxes[i, :2].tolist(), boxes[k, :2].tolist()) >= r
                   for k in kept_c):
                kept_c.append(i)
        keep += kept_c
    return sorted(keep, key=lambda i: (-scores[i].item(), labels[i].item(), i))


def _random(n, seed, extent=12.0, classes=3, score_levels=None, dtype=torch.float64):
    """n boxes in an extent x extent square (dense: many overlap), any yaw; scores rounded to `score_levels`
    values when given (many ties)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * extent
    z = torch.zeros(n, 1, dtype=torch.float64)
    whl = torch.rand(n, 3, generator=g, dtype=torch.float64) * 3 + 0.5
    yaw = (torch.rand(n, 1, generator=g, dtype=torch.float64) - 0.5) * 2 * math.pi
    v = torch.zeros(n, 2, dtype=torch.float64)
    boxes = torch.cat((xy, z, whl, yaw, v), 1).to(dtype)
    scores = torch.rand(n, generator=g, dtype=torch.float64)
    if score_levels:
        scores = torch.floor(scores * score_levels) / score_levels
    return boxes, scores.to(dtype), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("seed,thr,classes,levels", [
    (0, 0.2, 3, None), (1, 0.1, 3, None), (2, 0.5, 3, None),
    (3, 0.2, 1, None),  # single class
    (4, 0.2, 4, 3),  # identical scores, within and across classes
    (5, 0.0, 2, None),  # any overlap suppresses
])
def test_batched_nms_equals_brute_force(seed, thr, classes, levels):
    boxes, scores, labels = _random(80, seed, classes=classes, score_levels=levels)
    got = batched_nms_bev(boxes, scores, labels, thr).tolist()
    assert got == brute_force_nms(boxes, scores, labels, thr)
    assert 0 < len(got) < 80  # something was suppressed, something kept
    assert got == batched_nms_bev_reference(boxes, scores, labels, thr).tolist()
    for k in (0, 1, 5, len(got), 500):  # max_keep stops early with the same first boxes
        assert batched_nms_bev(boxes, scores, labels, thr, max_keep=k).tolist() == got[:k]


@pytest.mark.parametrize("seed,thr,radii", [
    (0, 0.2, [0.0, 1.0, 2.5]),  # IoU only for class 0; small and large circles
    (1, 1.0, [0.5, 1.5, 3.0]),  # circles only: IoU never exceeds 1
    (2, 0.0, [2.0, 0.0, 1.0]),
])
def test_nms_with_class_radii_equals_brute_force(seed, thr, radii):
    """The centre-distance rule (CenterPoint's circle NMS) beside the IoU rule, per class."""
    boxes, scores, labels = _random(80, seed, classes=3)
    boxes[:, 3:5] *= 0.3  # small boxes, as pedestrians and cones: their duplicates barely overlap
    got = batched_nms_bev(boxes, scores, labels, thr, radii=radii).tolist()
    assert got == brute_force_nms(boxes, scores, labels, thr, radii)
    assert got == batched_nms_bev_reference(boxes, scores, labels, thr, radii=radii).tolist()
    assert set(got) < set(batched_nms_bev(boxes, scores, labels, thr).tolist()) or thr == 1.0  # the circles take more
    for k in (1, 5, len(got)):
        assert batched_nms_bev(boxes, scores, labels, thr, max_keep=k, radii=radii).tolist() == got[:k]
    assert batched_nms_bev(boxes, scores, labels, thr, radii=[0.0] * 3).tolist() == batched_nms_bev(boxes, scores, labels, thr).tolist()


def test_nms_radii_are_checked():
    boxes, scores, labels = _random(10, 0, classes=3)
    with pytest.raises(ValueError, match="radii"):
        batched_nms_bev(boxes, scores, labels, 0.2, radii=[1.0, 1.0])  # label 2 has none
    with pytest.raises(ValueError, match="radii"):
        batched_nms_bev(boxes, scores, labels, 0.2, radii=[1.0, -1.0, 1.0])


def test_touching_nested_and_identical_boxes():
    # yaw 0.3 everywhere: b shares a's long edge, c touches a at a corner only, d lies inside e, f duplicates e
    yaw = 0.3
    c, s = math.cos(yaw), math.sin(yaw)

    def box(u, v, w, l):  # centre at (u, v) in the rotated frame
        return [u * c - v * s, u * s + v * c, 0.0, w, l, 1.5, yaw, 0.0, 0.0]

    boxes = torch.tensor([box(0, 0, 2, 4), box(0, 2, 2, 4), box(4, 2, 2, 4), box(20, 0, 1, 1), box(20, 0, 2, 4),
                          box(20, 0, 2, 4)], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95, 0.6, 0.6], dtype=torch.float64)
    labels = torch.zeros(6, dtype=torch.int64)
    for thr in (1e-6, 0.1, 0.2, 0.9):
        ref = brute_force_nms(boxes, scores, labels, thr)
        assert batched_nms_bev(boxes, scores, labels, thr).tolist() == ref
        assert batched_nms_bev_reference(boxes, scores, labels, thr).tolist() == ref
    # touching boxes never suppress each other; the nested 1x1 box (IoU 1/8) suppresses e at 0.1, not at 0.2;
    # the duplicate f (same score, higher index) always goes to e unless e itself was suppressed
    assert batched_nms_bev(boxes, scores, labels, 1e-6).tolist() == [3, 0, 1, 2]
    assert batched_nms_bev(boxes, scores, labels, 0.2).tolist() == [3, 0, 1, 2, 4]


def test_float32_model_boxes_equal_the_previous_implementation():
    """Dense clusters of float32 boxes, as the detection head produces them, ten classes."""
    for seed in range(4):
        boxes, scores, labels = _random(600, 10 + seed, extent=30.0, classes=10, score_levels=50, dtype=torch.float32)
        boxes[:, :2] -= 15.0
        got = batched_nms_bev(boxes, scores, labels, 0.2)
        assert torch.equal(got, batched_nms_bev_reference(boxes, scores, labels, 0.2))
        assert 50 < len(got) < 600


@pytest.mark.parametrize("radii", [(0.0,) * 10, (2.0, 4.0, 2.5, 4.0, 4.0, 2.5, 4.0, 0.0, 2.5, 2.0)])
def test_decode_equals_decode_with_the_previous_nms(radii):
    torch.manual_seed(0)
    grid = BEVGrid(x_min=-25.6, x_max=25.6, y_min=-25.6, y_max=25.6, resolution=1.6)
    config = DetectionHeadConfig(score_threshold=0.05, nms_pre=1000, max_detections=100, nms_radius_m=radii)
    head = DetectionHead(8, grid, config).eval()
    preds = {"cls_logits": torch.randn(2, head.anchors.shape[0], head.num_classes) - 2.0,
             "box_deltas": torch.randn(2, head.anchors.shape[0], 10) * 0.5}
    for fast, ref in zip(head.decode(preds), head.decode(preds, nms=batched_nms_bev_reference)):
        assert len(fast) == 100  # the max_detections limit is reached: the early stop is exercised
        assert torch.equal(fast.boxes, ref.boxes) and torch.equal(fast.scores, ref.scores) and torch.equal(fast.labels, ref.labels)
        if any(radii):  # no two kept boxes of a class closer than its radius
            d = torch.cdist(fast.boxes[:, :2].double(), fast.boxes[:, :2].double())
            same = fast.labels[:, None] == fast.labels[None, :]
            r = torch.tensor(radii, dtype=torch.float64)[fast.labels]
            assert not bool(((d < r[:, None]) & same & ~torch.eye(len(fast), dtype=torch.bool)).any())


def test_nms_keeps_one_of_duplicates_but_not_across_classes():
    box = torch.tensor([[0.0, 0, 0, 2, 4, 1.5, 0.2, 0, 0]])
    boxes = torch.cat((box, box, box))
    scores = torch.tensor([0.5, 0.9, 0.7])
    assert nms_bev(boxes, scores, 0.2).tolist() == [1] == nms_bev_reference(boxes, scores, 0.2).tolist()
    assert batched_nms_bev(boxes, scores, torch.tensor([0, 0, 1]), 0.2).tolist() == [1, 2]
    assert batched_nms_bev(boxes[:0], scores[:0], torch.zeros(0, dtype=torch.int64), 0.2).numel() == 0
    with pytest.raises(ValueError, match="labels"):
        batched_nms_bev(boxes, scores, torch.zeros(2, dtype=torch.int64), 0.2)
    with pytest.raises(ValueError, match=">=7"):
        nms_bev(boxes[:, :6], scores, 0.2)


def test_best_class_is_torch_max():
    g = torch.Generator().manual_seed(0)
    probs = torch.sigmoid(torch.randn(5000, 10, generator=g) * 3)
    probs[::7, 3] = probs[::7, 8] = 0.999  # equal best scores: the first class wins, as in torch.max
    probs[::11] = 0.5  # a row of one value
    for p in (probs, probs.double()):
        s, lab = best_class(p)
        ref_s, ref_lab = p.max(dim=-1)
        assert torch.equal(s, ref_s) and torch.equal(lab, ref_lab) and s.dtype == p.dtype
    probs[17, 4] = float("nan")  # torch's NaN rules
    s, lab = best_class(probs)
    ref_s, ref_lab = probs.max(dim=-1)
    assert torch.equal(s.nan_to_num(-1.0), ref_s.nan_to_num(-1.0)) and torch.equal(lab, ref_lab)
    with pytest.raises(ValueError, match="best_class"):
        best_class(probs[:, :0])
