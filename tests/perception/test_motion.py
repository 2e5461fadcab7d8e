"""Motion fusion: zero start, fast path equal to the reference, unseen entries contribute nothing, and
weights trained without the branch load into a model that has it."""
import math

import torch

from perception.motion import MotionFusion
from perception.video import VideoConfig, VideoModule
from tests.perception.test_video import GRID, _streams, pose


def _module(motion_channels: int, wide_dilation: int = 2) -> VideoModule:
    torch.manual_seed(0)
    cfg = VideoConfig(hidden_channels=4, key_channels=4, world_cells=48, recenter_cells=6, push_period_ms=50.0,
                      motion_channels=motion_channels, motion_wide_dilation=wide_dilation)
    return VideoModule(4, GRID, cfg)


def _ticks(n: int = 12):
    ticks, x, y, yaw = [], 0.0, 0.0, 0.2
    for k in range(n):
        if not 5 <= k < 7:  # stands still for two ticks
            x, y, yaw = x + 1.2 * math.cos(yaw), y + 1.2 * math.sin(yaw), yaw + 0.06
        ticks.append((k / 12.0 + (0.09 if k > 8 else 0.0), pose(x, y, yaw), k == 10))  # a dropped frame, a reset
    return ticks


def _stream(mod: VideoModule, fast: bool, ticks) -> list[torch.Tensor]:
    return [y for y, _ in _streams(mod, fast, ticks)]


def test_branch_starts_at_zero_so_grown_weights_compute_the_same():
    plain, grown = _module(0), _module(8)
    missing, unexpected = grown.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("motion.") for k in missing)
    for a, b in zip(_stream(plain, True, _ticks()), _stream(grown, True, _ticks())):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)


def test_wide_path_starts_at_zero_so_narrow_weights_compute_the_same():
    narrow, grown = _module(8, wide_dilation=0), _module(8, wide_dilation=2)
    with torch.no_grad():  # a trained narrow path
        narrow.motion.net[-1].weight.normal_(0, 0.3)
    missing, unexpected = grown.load_state_dict(narrow.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("motion.wide.") for k in missing)
    for a, b in zip(_stream(narrow, True, _ticks()), _stream(grown, True, _ticks())):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=0)


def test_the_wide_path_reaches_2d_cells_in_steps_of_d():
    """Content of an entry moved k cells from a cell reaches that cell's output through the narrow path for
    k <= 1 and through the wide path (two 3x3 convs dilated by d) for k in {0, d, 2d}: the displacements
    a velocity is read from. The gaps between (k = 3 for d = 2) close only in the heads' 3x3 convs after."""
    torch.manual_seed(0)
    for wide_dilation, reached in ((0, {0, 1}), (2, {0, 1, 2, 4})):
        m = MotionFusion(queue_channels=3, entries=2, channels=4, hidden=6, wide_dilation=wide_dilation)
        with torch.no_grad():
            for path in (m.net, m.wide):
                for layer in path if path is not None else ():
                    if isinstance(layer, torch.nn.Conv2d):
                        layer.weight.normal_(0, 0.5)
        cur, past = torch.randn(1, 3, 15, 15), torch.randn(1, 2, 3, 15, 15)
        seen, dt = torch.ones(1, 2, 15, 15, dtype=torch.bool), torch.tensor([[0.08, 0.17]])
        out = m(cur, past, seen, dt)[0, :, 7, 7]
        for k in range(7):
            moved = past.clone()
            moved[0, 1, :, 7, 7 + k] += 5.0
            changed = not torch.allclose(m(cur, moved, seen, dt)[0, :, 7, 7], out)
            assert changed == (k in reached), (wide_dilation, k)


def test_fast_path_equals_the_reference_with_the_branch_trained():
    mod = _module(8)
    with torch.no_grad():  # trained (non-zero) last convs, so the branch's inputs matter
        for last in (mod.motion.net[-1], mod.motion.wide[-1]):
            last.weight.normal_(0, 0.3)
            last.bias.normal_(0, 0.1)
    ref, fast = _stream(mod, False, _ticks()), _stream(mod, True, _ticks())
    moved = 0
    for yr, yf in zip(ref, fast):
        torch.testing.assert_close(yf, yr, atol=1e-5, rtol=1e-5)
    plain = _module(0)
    plain.load_state_dict(mod.state_dict(), strict=False)
    for yr, yp in zip(ref[1:], _stream(plain, True, _ticks())[1:]):
        moved += int(not torch.allclose(yr, yp, atol=1e-4))
    assert moved > 0  # the branch did change the output


def test_unseen_entries_contribute_nothing():
    torch.manual_seed(0)
    m = MotionFusion(queue_channels=3, entries=2, channels=5, hidden=6)
    torch.nn.init.normal_(m.net[-1].weight)
    cur, past = torch.randn(1, 3, 6, 7), torch.randn(1, 2, 3, 6, 7)
    seen = torch.ones(1, 2, 6, 7, dtype=torch.bool)
    seen[0, 1] = False
    seen[0, 0, :3] = False
    dt = torch.tensor([[0.08, 0.17]])
    out = m(cur, past, seen, dt)
    other = past.clone()
    other[0, 1] = torch.randn(3, 6, 7)  # an unseen entry's content
    other[0, 0, :, :3] = 7.0  # unseen cells of a seen entry
    torch.testing.assert_close(m(cur, other, seen, torch.tensor([[0.08, 99.0]])), out)
    assert not torch.allclose(m(cur, past, seen, torch.tensor([[0.30, 0.17]])), out)  # the time offset is read


class _Net(torch.nn.Module):
    """A stand-in with the model's attribute path `video.motion` (and another layer)."""

    def __init__(self, motion: bool, width: int = 3) -> None:
        super().__init__()
        self.head = torch.nn.Linear(width, 2)
        self.video = torch.nn.Module()
        if motion:
            self.video.motion = torch.nn.Linear(2, 2)


def test_load_weights_grows_only_zero_init_branches(tmp_path):
    import pytest

    from perception.checkpoint import load_weights

    torch.save({"model": _Net(False).state_dict(), "step": 1}, tmp_path / "plain.pt")
    torch.save({"model": _Net(True).state_dict(), "step": 1}, tmp_path / "grown.pt")
    net = _Net(True)
    assert sorted(load_weights(net, tmp_path / "plain.pt")) == ["video.motion.bias", "video.motion.weight"]
    assert load_weights(_Net(True), tmp_path / "grown.pt") == []
    with pytest.raises(ValueError, match="unexpected"):  # a branch the model lacks is not silently dropped
        load_weights(_Net(False), tmp_path / "grown.pt")
    torch.save({"model": {k: v for k, v in _Net(False).state_dict().items() if k != "head.bias"}, "step": 1}, tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="missing"):
        load_weights(_Net(False), tmp_path / "cut.pt")
    with pytest.raises(ValueError, match="do not fit"):
        load_weights(_Net(False, width=4), tmp_path / "plain.pt")
