"""Segmentation head: stride-4 logits whose size follows the conv/deconv formulas; ASPP keeps the size."""
from __future__ import annotations

import torch

from perception.backbone import Backbone, BackboneConfig, conv_out_size, deconv_out_size
from schema.classes import SEG_CLASSES
from perception.segmentation import ASPPLite, SegHeadConfig, SegmentationHead, upsample_logits


def test_head_output_size_and_classes():
    bb = BackboneConfig(widths=(8, 8, 16, 16, 16), out_channels=16, skip_channels=8)
    net, head = Backbone(bb), SegmentationHead(16, 8, 8, SegHeadConfig(channels=8))
    logits = head(net(torch.rand(2, 3, 96, 176)))
    s16 = (6, 11)
    up = tuple(deconv_out_size(deconv_out_size(s, 4, 2, 1), 2, 2, 0) for s in s16)  # two transposed convs
    assert logits.shape == (2, len(SEG_CLASSES), *up) == (2, 11, 24, 44)  # stride 4


def test_aspp_branches_keep_size():
    aspp = ASPPLite(8, 4, rates=(2, 4, 6))
    x = torch.rand(1, 8, 7, 9)
    for r in (2, 4, 6):  # the lecture formula with p = d, k = 3, s = 1
        assert conv_out_size(7, 3, 1, r, r) == 7
    assert aspp(x).shape == (1, 4, 7, 9)


def test_upsample_logits_keeps_lead_dims():
    x = torch.rand(2, 6, 11, 24, 44)
    y = upsample_logits(x, (96, 176))
    assert y.shape == (2, 6, 11, 96, 176)
    # Bilinear upsampling of a constant stays constant.
    torch.testing.assert_close(upsample_logits(torch.ones(1, 1, 2, 3, 4), (6, 8)), torch.ones(1, 1, 2, 6, 8))
