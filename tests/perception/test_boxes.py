"""Box coding round trip and BEV IoU against shapely polygons."""
import math

import pytest
import torch
from shapely.geometry import Polygon

from perception.anchors import make_anchors
from perception.boxes import (axis_aligned_iou, bev_corners, decode_boxes, encode_boxes, nearest_bev_rects,
                              rotated_bev_iou, rotated_bev_iou_pairwise, wrap_angle)
from perception.grid import BEVGrid


def random_boxes(n: int, gen: torch.Generator, spread: float = 40.0) -> torch.Tensor:
    xy = (torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5) * 2 * spread
    z = torch.rand(n, 1, generator=gen, dtype=torch.float64) * 3 - 1
    whl = torch.rand(n, 3, generator=gen, dtype=torch.float64) * 5 + 0.3
    yaw = (torch.rand(n, 1, generator=gen, dtype=torch.float64) - 0.5) * 2 * math.pi
    v = torch.randn(n, 2, generator=gen, dtype=torch.float64) * 5
    return torch.cat((xy, z, whl, yaw, v), dim=1)


def test_encode_decode_round_trip():
    gen = torch.Generator().manual_seed(0)
    boxes = random_boxes(500, gen)
    anchors, _ = make_anchors(BEVGrid(), dtype=torch.float64)
    a = anchors[torch.randint(0, anchors.shape[0], (500,), generator=gen)]
    for scale in (1.0, 4.0):
        back = decode_boxes(encode_boxes(boxes, a, scale), a, scale)
        torch.testing.assert_close(back[:, :6], boxes[:, :6])
        torch.testing.assert_close(back[:, 7:], boxes[:, 7:])
        torch.testing.assert_close(wrap_angle(back[:, 6] - boxes[:, 6]), torch.zeros(500, dtype=torch.float64), atol=1e-9, rtol=0)


def test_encoding_formulas_by_hand():
    anchor = torch.tensor([[1.0, 2.0, 0.5, 2.0, 4.0, 1.5, math.pi / 2]])
    box = torch.tensor([[2.0, 0.0, 1.0, 1.0, 8.0, 3.0, math.pi, 4.0, -2.0]])
    d = math.sqrt(2.0**2 + 4.0**2)
    t = encode_boxes(box, anchor, velocity_scale=2.0)[0]
    ref = [1 / d, -2 / d, 0.5 / 1.5, math.log(0.5), math.log(2.0), math.log(2.0), 1.0, 0.0, 2.0, -1.0]
    torch.testing.assert_close(t, torch.tensor(ref), atol=1e-6, rtol=1e-6)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="last dimension 9"):
        encode_boxes(torch.zeros(3, 7), torch.zeros(3, 7))


def _shapely_iou(a, b) -> float:
    pa, pb = Polygon(bev_corners(a).tolist()), Polygon(bev_corners(b).tolist())
    return pa.intersection(pb).area / pa.union(pb).area


def test_rotated_iou_matches_shapely():
    gen = torch.Generator().manual_seed(1)
    a = random_boxes(300, gen, spread=2.0)
    b = random_boxes(300, gen, spread=2.0)
    got = rotated_bev_iou_pairwise(a, b)
    ref = torch.tensor([_shapely_iou(x, y) for x, y in zip(a, b)], dtype=torch.float64)
    assert (ref > 0.05).sum() > 50  # the test exercises real overlaps
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)


def test_rotated_iou_special_cases():
    box = torch.tensor([[0.0, 0.0, 0.0, 2.0, 4.0, 1.0, 0.3, 0, 0]], dtype=torch.float64)
    assert rotated_bev_iou(box, box).item() == pytest.approx(1.0)
    turned = box.clone()
    turned[0, 6] += math.pi  # same footprint
    assert rotated_bev_iou(box, turned).item() == pytest.approx(1.0)
    far = box.clone()
    far[0, 0] = 10
    assert rotated_bev_iou(box, far).item() == 0.0
    inner = box.clone()
    inner[0, 3:5] = torch.tensor([1.0, 2.0])
    assert rotated_bev_iou(box, inner).item() == pytest.approx(0.25)
    assert rotated_bev_iou(box, box[:0]).shape == (1, 0)


def test_nearest_bev_rects_exact_for_axis_yaws():
    gen = torch.Generator().manual_seed(2)
    a = random_boxes(100, gen, spread=3.0)
    b = random_boxes(100, gen, spread=3.0)
    a[:, 6] = torch.randint(0, 4, (100,), generator=gen).double() * math.pi / 2
    b[:, 6] = torch.randint(0, 4, (100,), generator=gen).double() * math.pi / 2
    got = axis_aligned_iou(nearest_bev_rects(a), nearest_bev_rects(b)).diagonal()
    torch.testing.assert_close(got, rotated_bev_iou_pairwise(a, b), atol=1e-6, rtol=0)


def test_all_pairs_iou_matches_shapely():
    """The all-pairs form skips pairs whose circumscribed circles miss; it must still equal shapely everywhere."""
    gen = torch.Generator().manual_seed(3)
    a = random_boxes(30, gen, spread=6.0)
    b = random_boxes(25, gen, spread=6.0)
    got = rotated_bev_iou(a, b)
    ref = torch.tensor([[_shapely_iou(x, y) for y in b] for x in a], dtype=torch.float64)
    assert (ref > 0).sum() > 20 and (ref == 0).sum() > 20
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
