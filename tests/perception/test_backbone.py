"""Backbone: conv/deconv sizes follow the lecture's formulas; cameras share weights in one batch."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from perception.backbone import Backbone, BackboneConfig, conv_out_size, deconv_out_size, fold_fine_level, unfold_fine_level


# every third combination whose dilated kernel fits the padded input
_CONV_CASES = [c for c in itertools.product([7, 16, 23], [1, 3, 5], [1, 2, 3], [0, 1, 2], [1, 2])
               if c[0] + 2 * c[3] - c[4] * (c[1] - 1) - 1 >= 0][::3]


@pytest.mark.parametrize("size,k,s,p,d", _CONV_CASES)
def test_conv_output_size_formula(size, k, s, p, d):
    out = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)(torch.zeros(1, 1, size, size))
    assert out.shape[-1] == conv_out_size(size, k, s, p, d)


@pytest.mark.parametrize("size,k,s,p,d,op", [(5, 4, 2, 1, 1, 0), (5, 3, 2, 1, 1, 1), (7, 3, 1, 0, 2, 0), (4, 2, 2, 0, 1, 0), (6, 5, 3, 2, 1, 2)])
def test_deconv_output_size_formula(size, k, s, p, d, op):
    out = nn.ConvTranspose2d(1, 1, k, stride=s, padding=p, dilation=d, output_padding=op)(torch.zeros(1, 1, size, size))
    assert out.shape[-1] == deconv_out_size(size, k, s, p, d, op)


def _expected(size: int) -> dict[str, int]:
    s2 = conv_out_size(size, 3, 2, 1)  # stem
    s4 = conv_out_size(s2, 3, 2, 1)  # stage1
    s8 = conv_out_size(s4, 3, 2, 1)  # stage2
    s16 = conv_out_size(conv_out_size(s8, 3, 2, 1), 3, 1, 2, 2)  # stage3, dilated stage4 (p = d keeps size)
    return {"s4": s4, "s8": s8, "s16": s16}


def test_backbone_shapes_follow_the_formulas():
    cfg = BackboneConfig(widths=(8, 8, 16, 16, 16), out_channels=24, skip_channels=12)
    net = Backbone(cfg).eval()
    out = net(torch.rand(2, 3, 96, 176))
    eh, ew = _expected(96), _expected(176)
    assert out["s16"].shape == (2, 24, eh["s16"], ew["s16"]) == (2, 24, 6, 11)
    assert out["s8"].shape == (2, 12, eh["s8"], ew["s8"])
    assert out["s4"].shape == (2, 8, eh["s4"], ew["s4"])


def test_cameras_batched_equal_cameras_alone():
    torch.manual_seed(0)
    net = Backbone(BackboneConfig(widths=(8, 8, 16, 16, 16), out_channels=16, skip_channels=8)).eval()
    x = torch.rand(6, 3, 64, 96)
    with torch.no_grad():
        batched = net(x)["s16"]
        alone = torch.cat([net(x[i : i + 1])["s16"] for i in range(6)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)


def test_rejects_bad_sizes():
    net = Backbone(BackboneConfig(widths=(8, 8, 16, 16, 16), out_channels=16, skip_channels=8))
    with pytest.raises(ValueError, match="multiple of 16"):
        net(torch.rand(1, 3, 100, 96))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(torch.rand(3, 64, 96))


def test_folded_batchnorm_in_eval_equals_conv_then_bn():
    from perception.backbone import conv_bn

    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 6, 3, padding=1, bias=True), nn.BatchNorm2d(6)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    bn.bias.data.uniform_(-1, 1)
    bn.eval()
    x = torch.randn(2, 4, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(conv_bn(conv, bn, x), bn(conv(x)), atol=1e-5, rtol=1e-5)
    bn.train()
    torch.testing.assert_close(conv_bn(conv, bn, x), bn(conv(x)))


def test_inference_normalisation_equals_the_training_path():
    """Without autograd the input normalisation writes channels-last memory directly: same features."""
    torch.manual_seed(0)
    net = Backbone(BackboneConfig(widths=(8, 8, 16, 16, 16), out_channels=16, skip_channels=8)).eval()
    images = torch.rand(3, 3, 64, 96)
    with torch.enable_grad():
        ref = net(images.contiguous(memory_format=torch.channels_last))
    with torch.no_grad():
        fast = net(images)
    for key in ref:
        torch.testing.assert_close(fast[key], ref[key].detach(), atol=1e-6, rtol=0)


def test_cached_folded_weights_follow_weight_changes():
    """Inference caches the batch-norm-folded weights; loading or training weights in place refreshes them."""
    from perception.backbone import _fold, folded_conv_bn

    torch.manual_seed(0)
    conv, bn = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        w1, _ = folded_conv_bn(conv, bn)
        assert folded_conv_bn(conv, bn)[0] is w1  # cached
        bn.running_var.mul_(4.0)  # as load_state_dict or a training step would
        conv.weight.add_(1.0)
        w2, b2 = folded_conv_bn(conv, bn)
        ref_w, ref_b = _fold(conv, bn)
    assert not torch.equal(w2, w1)
    torch.testing.assert_close(w2, ref_w, atol=0, rtol=0)
    torch.testing.assert_close(b2, ref_b, atol=0, rtol=0)


def test_fold_fine_level_round_trips_and_rejects_odd_channels():
    s16, s8 = torch.randn(2, 3, 16, 4, 6), torch.randn(2, 3, 8, 8, 12)  # (B, Ncam, C, h, w), (B, Ncam, Cs, 2h, 2w)
    folded = fold_fine_level(s16.flatten(0, 1), s8.flatten(0, 1)).view(2, 3, 16 + 32, 4, 6)
    got16, got8 = unfold_fine_level(folded, 16)
    assert torch.equal(got16, s16) and torch.equal(got8, s8)
    assert folded[0, 1, 16:, 2, 3].tolist() == s8[0, 1, :, 4:6, 6:8].flatten().tolist()  # a coarse pixel holds its 2x2 fine pixels
    alone, none = unfold_fine_level(s16, 16)
    assert alone is s16 and none is None
    for channels in (17, 64):
        with pytest.raises(ValueError, match="channels"):
            unfold_fine_level(folded, channels)
