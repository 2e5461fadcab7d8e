"""Road head: rasterisation against a per-pixel reference, rasterise -> vectorise round trip, head shapes and loss."""
import numpy as np
import pytest
import torch
from shapely.geometry import LineString, Point
from pyquaternion import Quaternion

from schema.classes import ROAD_CLASSES
from perception.grid import BEVGrid
from perception.road import (RoadHead, RoadHeadConfig, polylines_to_global, rasterize_polylines, rasterize_road,
                             trace_skeleton, trace_skeleton_reference, vectorize_mask, vectorize_mask_reference)
from schema.messages import Pose

GRID = BEVGrid()
CELL = GRID.resolution


def test_rasterize_matches_per_pixel_distance():
    grid = BEVGrid(x_min=-8.0, x_max=8.0, y_min=-8.0, y_max=8.0, resolution=1.6)
    line = np.array([[-7.0, -6.0], [2.0, 1.3], [6.5, -3.0]])
    up, thick = 2, 1.3
    mask = rasterize_polylines([line], grid, up, thick)
    res = grid.resolution / up
    ls = LineString(line)
    ref = np.zeros_like(mask)
    for i in range(mask.shape[0]):
        for j in range(mask.shape[1]):
            p = Point(grid.x_min + (i + 0.5) * res, grid.y_min + (j + 0.5) * res)
            ref[i, j] = ls.distance(p) <= thick / 2 + 1e-9
    assert mask.shape == (20, 20) and mask.sum() > 20
    assert np.array_equal(mask, ref)


def _check_round_trip(gt_line: np.ndarray, up: int):
    mask = rasterize_polylines([gt_line], GRID, up, 1.0)
    found = vectorize_mask(mask.astype(np.float32), GRID, up)
    assert len(found) == 1
    line, score = found[0]
    assert score == 1.0
    gt = LineString(gt_line)
    got = LineString(line)
    # every recovered vertex within a cell of the truth, and the truth within a cell of the recovered line
    assert max(gt.distance(Point(p)) for p in line) < CELL
    assert max(got.distance(Point(gt.interpolate(d))) for d in np.linspace(0, gt.length, 200)) < CELL
    # ordered: the vertices advance monotonically along the true line
    s = np.array([gt.project(Point(p)) for p in line])
    assert np.all(np.diff(s) > 0) or np.all(np.diff(s) < 0)
    assert len(line) < len(mask.nonzero()[0])  # simplified, not every pixel


@pytest.mark.parametrize("up", [1, 2, 4])
def test_round_trip_straight(up):
    _check_round_trip(np.array([[-30.0, -20.0], [35.0, 12.0]]), up)


@pytest.mark.parametrize("up", [2, 4])
def test_round_trip_curved(up):
    t = np.linspace(0.1, np.pi - 0.1, 60)
    _check_round_trip(np.stack((25 * np.cos(t), 25 * np.sin(t) - 10), axis=1), up)


def test_vectorize_separate_lines_and_threshold():
    a, b = np.array([[-40.0, -30.0], [40.0, -30.0]]), np.array([[-40.0, 20.0], [40.0, 25.0]])
    prob = rasterize_polylines([a], GRID, 2, 1.0) * 0.9 + rasterize_polylines([b], GRID, 2, 1.0) * 0.6
    found = vectorize_mask(prob.astype(np.float32), GRID, 2)
    assert sorted(round(s, 3) for _, s in found) == [0.6, 0.9]
    assert len(vectorize_mask(prob.astype(np.float32), GRID, 2, threshold=0.7)) == 1
    with pytest.raises(ValueError, match="raster"):
        vectorize_mask(prob[:10], GRID, 2)


@pytest.mark.parametrize("up", [1, 2, 4])
def test_head_shapes_and_loss(up):
    head = RoadHead(8, GRID, RoadHeadConfig(hidden_channels=8, upsample=up))
    logits = head(torch.randn(2, 8, 64, 64))
    assert logits.shape == (2, len(ROAD_CLASSES), 64 * up, 64 * up) and head.out_shape == (64 * up, 64 * up)
    target = (torch.rand_like(logits) > 0.9).float()
    p = torch.sigmoid(logits.double())
    w = head.config.pos_weight
    ref = -(w * target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    torch.testing.assert_close(head.loss(logits, target)["road"].double(), ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="match logits"):
        head.loss(logits, target[:, :1])


def test_head_vectorize_from_logits():
    head = RoadHead(8, GRID)
    road = {"lane_divider": [np.array([[-30.0, 2.0], [30.0, 2.0]])], "road_edge": [np.array([[-30.0, -8.0], [30.0, -9.0]]), np.array([[-30.0, 9.0], [30.0, 9.0]])]}
    target = torch.from_numpy(rasterize_road(road, GRID, 2, 1.0))[None]  # (1, R, H_r, W_r)
    out = head.vectorize(target * 10 - 5)
    assert set(out[0]) == set(ROAD_CLASSES)
    assert len(out[0]["lane_divider"]) == 1 and len(out[0]["road_edge"]) == 2
    scored = head.vectorize_scored(target * 10 - 5)[0]
    assert all(s == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item()) for _, s in scored["road_edge"])
    with pytest.raises(ValueError, match="unknown road classes"):
        rasterize_road({"crosswalk": []}, GRID, 2, 1.0)


def test_polylines_to_global():
    pose = Pose(np.array([100.0, 200.0, 1.0]), Quaternion(axis=(0, 0, 1), angle=0.7))
    line = np.array([[1.0, 0.0], [0.0, 2.0]])
    got = polylines_to_global([line], pose)[0]
    c, s = np.cos(0.7), np.sin(0.7)
    ref = np.array([[100 + c, 200 + s], [100 - 2 * s, 200 + 2 * c]])
    np.testing.assert_allclose(got, ref, atol=1e-9)


def _contiguous(path):
    return all(max(abs(a[0] - b[0]), abs(a[1] - b[1])) == 1 for a, b in zip(path[:-1], path[1:]))


def test_trace_skeleton_junction_and_loop():
    sk = np.zeros((30, 30), dtype=bool)
    sk[5, 2:20] = True  # a T: bar along row 5 ...
    sk[6:15, 10] = True  # ... and a stem down from its middle
    paths = trace_skeleton(sk)
    assert set(p for path in paths for p in path) == set(zip(*np.nonzero(sk)))
    assert len(paths) == 2 and all(_contiguous(p) for p in paths)
    stem = min(paths, key=len)
    assert {stem[0], stem[-1]} == {(5, 10), (14, 10)}  # the branch joins the bar at the junction
    ring = np.zeros((30, 30), dtype=bool)
    ring[10, 10:20] = ring[20, 10:20] = ring[10:21, 10] = ring[10:21, 19] = True
    paths = trace_skeleton(ring)
    assert len(paths) == 1 and len(paths[0]) == ring.sum() and _contiguous(paths[0])


def _random_masks(n, seed):
    """Probability rasters (128 x 128) with branching, touching and looping line networks: smoothed noise, and
    rasterised random polylines (crossings and junctions)."""
    from scipy.ndimage import uniform_filter

    rng = np.random.default_rng(seed)
    for k in range(n):
        if k % 2:
            prob = uniform_filter(rng.random((128, 128)), size=int(rng.integers(2, 6)))
            yield prob.astype(np.float32), float(np.quantile(prob, rng.uniform(0.6, 0.95)))
        else:
            lines = [rng.uniform(-50, 50, (int(rng.integers(2, 6)), 2)) for _ in range(int(rng.integers(1, 8)))]
            prob = rasterize_polylines(lines, GRID, 2, float(rng.uniform(0.5, 3.0))) * rng.uniform(0.6, 1.0, (128, 128))
            yield prob.astype(np.float32), 0.5


def _same_lines(got, ref) -> bool:
    return len(got) == len(ref) and all(a.dtype == b.dtype and np.array_equal(a, b) and s == t
                                        for (a, s), (b, t) in zip(got, ref))


def test_trace_and_vectorize_equal_the_previous_implementation():
    """Bit-identical paths and polylines (vertices and scores) to the pure-Python versions; min_length_m 0.8 is one
    straight pixel step at 0.8 m pixels: those exact ties take the re-measuring branch."""
    from skimage.morphology import skeletonize

    count = 0
    for k, (prob, thr) in enumerate(_random_masks(24, 0)):
        sk = skeletonize(prob > thr)
        assert trace_skeleton(sk) == trace_skeleton_reference(sk)
        min_len = (0.0, 0.8, 2.0, 5.0)[k % 4]
        got = vectorize_mask(prob, GRID, 2, thr, min_len, 0.2)
        assert _same_lines(got, vectorize_mask_reference(prob, GRID, 2, thr, min_len, 0.2))
        count += len(got)
    assert count > 100
    for sk in (np.zeros((5, 7), dtype=bool), np.ones((1, 1), dtype=bool), np.ones((3, 3), dtype=bool)):
        assert trace_skeleton(sk) == trace_skeleton_reference(sk)
    assert vectorize_mask(np.zeros((128, 128), np.float32), GRID, 2) == []
    with pytest.raises(ValueError, match="2-D"):
        trace_skeleton(np.zeros(4, dtype=bool))


def test_overfit_road_head_recovers_polylines():
    """A tiny head on one fixed BEV feature learns the rasterised lines; its vectorised output scores Chamfer AP 1."""
    from lab.metrics import chamfer_ap

    torch.manual_seed(0)
    torch.set_num_threads(1)
    grid = BEVGrid(x_min=-12.8, x_max=12.8, y_min=-12.8, y_max=12.8, resolution=1.6)
    road = {"lane_divider": [np.array([[-11.0, 1.0], [11.0, 3.0]])],
            "road_edge": [np.stack((np.linspace(-11, 11, 20), -6 + 0.03 * np.linspace(-11, 11, 20) ** 2), axis=1)]}
    head = RoadHead(8, grid, RoadHeadConfig(hidden_channels=16, upsample=2))
    target = torch.from_numpy(rasterize_road(road, grid, 2, 1.0))[None]
    bev = torch.randn(1, 8, 16, 16)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(200):
        loss = head.loss(head(bev), target)["road"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred = head.vectorize_scored(head(bev))
    r = chamfer_ap(pred, [road])
    assert r["mAP"] == 1.0, r
