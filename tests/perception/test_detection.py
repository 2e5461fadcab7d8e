"""DetectionHead: shapes, assignment rules, a quick overfit that decodes the ground truth, and to_global vs the devkit."""
import math

import pytest
import torch

from perception.boxes import encode_boxes
from schema.classes import DETECTION_NAMES
from perception.detection import DetectionHead, DetectionHeadConfig, fold_symmetric_yaw
from perception.grid import BEVGrid
from perception.structures import Detections

TINY = BEVGrid(x_min=-12.8, x_max=12.8, y_min=-12.8, y_max=12.8, resolution=1.6)  # 16 x 16 cells


def _gt():
    boxes = torch.tensor([
        [3.1, -4.3, 0.9, 1.9, 4.5, 1.7, 0.4, 3.0, 1.0],  # car, moving
        [-6.2, 5.5, 0.85, 0.6, 0.7, 1.75, -2.0, 0.5, -0.8],  # pedestrian
        [8.0, 7.0, 0.5, 0.4, 0.4, 1.1, 0.0, 0.0, 0.0],  # traffic cone (smaller than a cell)
    ])
    labels = torch.tensor([DETECTION_NAMES.index(n) for n in ("car", "pedestrian", "traffic_cone")])
    return boxes, labels


def test_forward_shapes_and_bad_input():
    head = DetectionHead(8, TINY)
    out = head(torch.randn(2, 8, 16, 16))
    a = 10 * 2
    assert out["cls_logits"].shape == (2, 16 * 16 * a, 10)
    assert out["box_deltas"].shape == (2, 16 * 16 * a, 10)
    with pytest.raises(ValueError, match="BEV features"):
        head(torch.randn(2, 8, 15, 16))


def test_forward_flattening_matches_anchor_order():
    """Output row (i*W + j)*A + a must belong to cell (i, j): a bump in one cell moves only that cell's rows."""
    torch.manual_seed(0)
    head = DetectionHead(4, TINY)
    bev = torch.zeros(1, 4, 16, 16)
    base = head(bev)["cls_logits"]
    bev[0, :, 5, 9] = 10.0
    diff = (head(bev)["cls_logits"] - base).abs().sum(-1)[0].reshape(16, 16, 20).sum(-1)
    changed = torch.nonzero(diff > 1e-6).tolist()
    # 3x3 shared conv: cells within one of (5, 9) change, nothing else
    assert [5, 9] in changed and all(abs(i - 5) <= 1 and abs(j - 9) <= 1 for i, j in changed)


def test_assignment_rules():
    head = DetectionHead(8, TINY)
    boxes, labels = _gt()
    t = head.assign(boxes, labels)
    pos = torch.nonzero(t.pos_mask).flatten()
    # every GT has at least one positive, each positive is an anchor of the GT's class
    assert set(t.matched_gt[pos].tolist()) == {0, 1, 2}
    assert torch.equal(head.anchor_labels[pos], labels[t.matched_gt[pos]])
    assert torch.equal(t.cls_target[pos].argmax(-1), labels[t.matched_gt[pos]])
    assert t.cls_target.sum() == len(pos)
    # the cone's positive is the anchor in the cell containing its centre
    cone_pos = pos[t.matched_gt[pos] == 2]
    assert len(cone_pos) == 1
    cell = int(cone_pos) // 20
    i, j = divmod(cell, 16)
    assert (i, j) == (int((8.0 + 12.8) // 1.6), int((7.0 + 12.8) // 1.6))
    # regression targets are the encoding of the matched GT
    torch.testing.assert_close(t.reg_target, encode_boxes(boxes[t.matched_gt[pos]], head.anchors[pos], head.config.velocity_scale))
    # boxes outside the grid give no positives; no boxes give all negatives
    outside = head.assign(torch.tensor([[40.0, 0, 0.8, 2, 4.5, 1.7, 0, 0, 0]]), torch.tensor([0]))
    assert outside.pos_mask.sum() == 0
    none = head.assign(torch.zeros(0, 9), torch.zeros(0, dtype=torch.int64))
    assert none.pos_mask.sum() == 0 and none.cls_weight.min() == 1


def test_fold_symmetric_yaw_keeps_the_axis_and_faces_the_anchor():
    torch.manual_seed(0)
    boxes = torch.randn(200, 9)
    boxes[:, 6] = (torch.rand(200) * 2 - 1) * math.pi
    anchor_yaws = torch.tensor([0.0, math.pi / 2]).repeat(100)
    symmetric = torch.rand(200) < 0.5
    out = fold_symmetric_yaw(boxes, anchor_yaws, symmetric)
    torch.testing.assert_close(out[:, [0, 1, 2, 3, 4, 5, 7, 8]], boxes[:, [0, 1, 2, 3, 4, 5, 7, 8]])
    torch.testing.assert_close(out[~symmetric], boxes[~symmetric])
    # same axis: the yaw moved by 0 or pi; symmetric targets now within pi/2 of their anchor
    torch.testing.assert_close(torch.sin(2 * out[:, 6]), torch.sin(2 * boxes[:, 6]), atol=1e-5, rtol=0)
    assert bool((torch.cos(out[symmetric, 6] - anchor_yaws[symmetric]) >= -1e-6).all())
    assert bool((out[:, 6] >= -math.pi).all() and (out[:, 6] < math.pi).all())


def test_symmetric_classes_get_the_yaw_target_nearer_the_anchor():
    """A barrier turned round is the same barrier: its sin/cos target faces the anchor; a car's does not."""
    boxes = torch.tensor([
        [3.1, -4.3, 0.5, 2.5, 0.5, 1.0, -math.pi / 2 + 0.1, 0.0, 0.0],  # barrier, facing away from its anchor (pi/2)
        [-6.2, 5.5, 0.9, 1.9, 4.5, 1.7, math.pi - 0.1, 0.0, 0.0],  # car, the same heading
    ])
    labels = torch.tensor([DETECTION_NAMES.index(n) for n in ("barrier", "car")])
    for symmetric in (("barrier",), ()):
        head = DetectionHead(8, TINY, DetectionHeadConfig(symmetric_yaw_classes=symmetric))
        t = head.assign(boxes, labels)
        pos = torch.nonzero(t.pos_mask).flatten()
        matched = t.matched_gt[pos]
        assert set(matched.tolist()) == {0, 1}
        expected = boxes[matched].clone()
        for row, anchor_yaw in enumerate(head.anchors[pos, 6].tolist()):  # the slow way: try both names
            if symmetric and matched[row] == 0 and math.cos(expected[row, 6] - anchor_yaw) < 0:
                expected[row, 6] -= math.pi
        torch.testing.assert_close(t.reg_target, encode_boxes(expected, head.anchors[pos], head.config.velocity_scale))
        barrier_cos = t.reg_target[matched == 0, 7]
        assert bool((barrier_cos >= 0).all()) if symmetric else bool((barrier_cos < 0).any())


def test_symmetric_yaw_classes_must_be_detection_classes():
    with pytest.raises(ValueError, match="symmetric_yaw_classes"):
        DetectionHeadConfig(symmetric_yaw_classes=("jersey_barrier",))


def test_overfit_decodes_the_ground_truth():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    head = DetectionHead(8, TINY, DetectionHeadConfig(hidden_channels=32))
    bev = torch.randn(1, 8, 16, 16)
    boxes, labels = _gt()
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for step in range(300):
        losses = head.loss(head(bev), [boxes], [labels])
        total = losses["det_cls"] + losses["det_reg"]
        first = total.item() if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    assert total.item() < first / 20
    head.eval()
    dets = head.decode(head(bev))[0]
    assert sorted(dets.labels.tolist()) == sorted(labels.tolist())
    for b, l in zip(boxes, labels):
        d = dets[dets.labels == l]
        assert len(d) == 1
        got = d.boxes[0]
        torch.testing.assert_close(got[[0, 1, 2, 3, 4, 5, 7, 8]], b[[0, 1, 2, 3, 4, 5, 7, 8]], atol=0.1, rtol=0.05)
        assert abs(math.remainder(got[6].item() - b[6].item(), 2 * math.pi)) < 0.1
        assert d.scores[0] > 0.5


def test_decode_threshold_topk_and_limit():
    head = DetectionHead(8, TINY, DetectionHeadConfig(score_threshold=0.5, max_detections=3))
    preds = head(torch.randn(1, 8, 16, 16))
    preds["cls_logits"] = torch.full_like(preds["cls_logits"], -10.0)
    assert len(head.decode(preds)[0]) == 0
    # light up four far-apart cells as cars: top 3 by score survive
    for k, cell in enumerate((0, 40, 120, 200)):
        preds["cls_logits"][0, cell * 20, 0] = 1.0 + k
    dets = head.decode(preds)[0]
    assert len(dets) == 3 and dets.names == ["car"] * 3
    assert torch.all(dets.scores[:-1] >= dets.scores[1:])
    torch.testing.assert_close(dets.scores, torch.sigmoid(torch.tensor([4.0, 3.0, 2.0])))


def test_detections_indexing_and_validation():
    boxes, labels = _gt()
    dets = Detections(boxes, torch.tensor([0.9, 0.2, 0.6]), labels)
    sel = dets[dets.scores > 0.5]
    assert len(sel) == 2 and sel.names == ["car", "traffic_cone"]
    assert len(dets[1]) == 1 and dets[1].names == ["pedestrian"]
    with pytest.raises(ValueError, match="labels"):
        Detections(boxes, torch.zeros(3), torch.tensor([0, 1, 10]))
    with pytest.raises(ValueError, match="boxes"):
        Detections(boxes[:, :7], torch.zeros(3), labels)


def test_invalid_velocity_drops_only_velocity_terms():
    torch.manual_seed(1)
    head = DetectionHead(8, TINY)
    preds = head(torch.randn(1, 8, 16, 16))
    boxes, labels = _gt()
    base = head.loss(preds, [boxes], [labels])["det_reg"]
    wrong_v = boxes.clone()
    wrong_v[0, 7:] = torch.tensor([30.0, -20.0])  # a box whose (unknown) velocity was stored wrongly
    invalid = torch.tensor([False, True, True])
    assert head.loss(preds, [wrong_v], [labels])["det_reg"] > base + 1
    masked = head.loss(preds, [wrong_v], [labels], [invalid])["det_reg"]
    same = head.loss(preds, [boxes], [labels], [invalid])["det_reg"]
    torch.testing.assert_close(masked, same)  # the stored velocity of the invalid box no longer matters
    assert same < base  # its velocity terms are gone
    torch.testing.assert_close(head.loss(preds, [boxes], [labels], [torch.ones(3, dtype=torch.bool)])["det_reg"], base)


def test_every_box_keeps_a_positive_when_boxes_share_a_cell():
    head = DetectionHead(8, TINY)
    cone = DETECTION_NAMES.index("traffic_cone")
    # three cones inside one 1.6 m cell: no anchor overlaps enough, each must still get its own positive
    boxes = torch.tensor([[0.3, 0.3, 0.5, 0.4, 0.4, 1.0, 0.0, 0, 0], [1.2, 1.1, 0.5, 0.4, 0.4, 1.0, 0.1, 0, 0],
                          [0.5, 1.3, 0.5, 0.4, 0.4, 1.0, 1.4, 0, 0]])
    t = head.assign(boxes, torch.full((3,), cone))
    matched = t.matched_gt[t.pos_mask]
    assert sorted(matched.tolist()) == [0, 1, 2]
