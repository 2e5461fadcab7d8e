"""Per-class rotated-BEV NMS equals a brute-force greedy NMS written with Python loops and shapely."""
import math

import torch
from shapely.geometry import Polygon

from perception.boxes import bev_corners
from perception.nms import batched_nms_bev, nms_bev


def _iou(a, b) -> float:
    pa, pb = Polygon(bev_corners(a).tolist()), Polygon(bev_corners(b).tolist())
    return pa.intersection(pb).area / pa.union(pb).area


def brute_force_nms(boxes, scores, labels, thr):
    keep = []
    for c in sorted(set(labels.tolist())):
        idx = [i for i in range(len(scores)) if labels[i].item() == c]
        idx.sort(key=lambda i: (-scores[i].item(), i))
        kept_c = []
        for i in idx:
            if all(_iou(boxes[i], boxes[k]) <= thr for k in kept_c):
                kept_c.append(i)
        keep += kept_c
    return sorted(keep, key=lambda i: (-scores[i].item(), i))


def _random(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 12
    z = torch.zeros(n, 1, dtype=torch.float64)
    whl = torch.rand(n, 3, generator=g, dtype=torch.float64) * 3 + 0.5
    yaw = (torch.rand(n, 1, generator=g, dtype=torch.float64) - 0.5) * 2 * math.pi
    v = torch.zeros(n, 2, dtype=torch.float64)
    boxes = torch.cat((xy, z, whl, yaw, v), 1)
    return boxes, torch.rand(n, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def test_batched_nms_equals_brute_force():
    for seed, thr in ((0, 0.2), (1, 0.1), (2, 0.5)):
        boxes, scores, labels = _random(80, seed)
        got = batched_nms_bev(boxes, scores, labels, thr).tolist()
        ref = brute_force_nms(boxes, scores, labels, thr)
        assert got == ref
        assert 0 < len(got) < 80  # something was suppressed, something kept


def test_nms_keeps_one_of_duplicates_but_not_across_classes():
    box = torch.tensor([[0.0, 0, 0, 2, 4, 1.5, 0.2, 0, 0]])
    boxes = torch.cat((box, box, box))
    scores = torch.tensor([0.5, 0.9, 0.7])
    assert nms_bev(boxes, scores, 0.2).tolist() == [1]
    assert batched_nms_bev(boxes, scores, torch.tensor([0, 0, 1]), 0.2).tolist() == [1, 2]
    assert batched_nms_bev(boxes[:0], scores[:0], torch.zeros(0, dtype=torch.int64), 0.2).numel() == 0
