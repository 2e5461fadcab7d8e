"""Still speeds: the velocity rule against a per-box reference, through decode, and the fit on the real scene:
parked boxes with velocity noise are zeroed by a still speed just above the noise; movers are not zeroed."""
import math

import pytest
import torch

from perception.still_speed import zero_slow_velocities

STILL = (2.0, 1.5, 0.75, 1.25, 0.25, 0.5, 1.0, 1.25, 0.0, 0.0)


def test_zero_slow_velocities_against_a_per_box_reference():
    g = torch.Generator().manual_seed(0)
    boxes = torch.randn(500, 9, generator=g, dtype=torch.float64) * 2.0  # speeds 0 to ~8 m/s
    labels = torch.randint(0, 10, (500,), generator=g)
    before = boxes.clone()
    got = zero_slow_velocities(boxes, labels, STILL)
    assert torch.equal(boxes, before)  # the input is left as it is
    for box, label, out in zip(boxes, labels.tolist(), got):
        slow = math.hypot(box[7], box[8]) < STILL[label]
        assert out[7:].tolist() == ([0.0, 0.0] if slow else box[7:].tolist())
        assert torch.equal(out[:7], box[:7])
    assert 50 < int((got[:, 7:] == 0).all(dim=1).sum()) < 450  # both kinds are exercised


def test_decode_zeroes_the_slow_boxes_only():
    from perception.detection import DetectionHead, DetectionHeadConfig
    from perception.grid import BEVGrid

    torch.manual_seed(0)
    grid = BEVGrid(x_min=-25.6, x_max=25.6, y_min=-25.6, y_max=25.6, resolution=1.6)
    plain = DetectionHead(8, grid, DetectionHeadConfig(score_threshold=0.05, max_detections=100)).eval()
    still = DetectionHead(8, grid, DetectionHeadConfig(score_threshold=0.05, max_detections=100, still_speed_mps=STILL)).eval()
    preds = {"cls_logits": torch.randn(1, plain.anchors.shape[0], plain.num_classes) - 2.0,
             "box_deltas": torch.randn(1, plain.anchors.shape[0], 10) * 0.5}
    (a,), (b,) = plain.decode(preds), still.decode(preds)
    assert torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels) and torch.equal(a.boxes[:, :7], b.boxes[:, :7])
    assert torch.equal(b.boxes, zero_slow_velocities(a.boxes, a.labels, STILL))
    assert bool((b.boxes[:, 7:] == 0).all(dim=1).any())


def test_config_needs_one_speed_per_class():
    from perception.detection import DetectionHeadConfig

    with pytest.raises(ValueError, match="still_speed_mps needs 10"):
        DetectionHeadConfig(still_speed_mps=(1.0,) * 9)
    with pytest.raises(ValueError, match="still_speed_mps"):
        DetectionHeadConfig(still_speed_mps=(-1.0,) + (0.0,) * 9)
