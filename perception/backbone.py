"""Per-camera image backbone: a small residual CNN shared by all cameras (seed Part 2, "nV" backbones).

All cameras go through in one call as a batch of B*Ncam images. Stages at strides 2/4/8/16, the last
stage dilated (rate 2) to widen the receptive field without losing resolution (seed Part 3), then a
light FPN: the stride-16 output mixes in the stride-8 stage, and a stride-8 top-down map feeds the
segmentation head's skip path (and, with `model.bev.fine_level`, the BEV encoder: see `fold_fine_level`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from perception.fuse import _fold, conv_act, conv_bn, folded_conv_bn  # noqa: F401 (conv_bn, _fold, folded_conv_bn: this module's API)


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Lecture formula: floor((in + 2p - d(k-1) - 1) / s) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def deconv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1, output_padding: int = 0) -> int:
    """Lecture formula: (in - 1)s - 2p + d(k-1) + output_padding + 1."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


class ConvBNReLU(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU; the batch norm is folded into the conv in eval mode."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> None:
        pad = dilation * (k - 1) // 2
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def conv_bn_pairs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """The (conv, batch norm) pairs to fold (perception.fuse)."""
        return [(self[0], self[1])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_act(self[0], x, "relu", bn=self[1])


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return ConvBNReLU(cin, cout, k, stride, dilation)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def conv_bn_pairs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """The (conv, batch norm) pairs to fold (perception.fuse)."""
        return [(self.conv1, self.bn1), (self.conv2, self.bn2)] + ([] if self.short is None else [(self.short[0], self.short[1])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = conv_act(self.conv1, x, "relu", bn=self.bn1)
        shortcut = x if self.short is None else conv_act(self.short[0], x, bn=self.short[1])
        return conv_act(self.conv2, y, "relu", other=shortcut, bn=self.bn2)  # relu(bn2(conv2(y)) + shortcut)


@dataclass(frozen=True)
class BackboneConfig:
    widths: tuple[int, int, int, int, int] = (16, 16, 48, 64, 64)  # stem /2, stage /4, /8, /16, dilated /16 (16 at /4: the costliest map)
    out_channels: int = 64  # stride-16 feature channels (the BEV encoder's keys/values)
    skip_channels: int = 32  # stride-8 FPN map for the segmentation head
    dilation: int = 2  # of the last stage

    def __post_init__(self) -> None:
        if len(self.widths) != 5 or min(self.widths) < 1:
            raise ValueError(f"BackboneConfig.widths must be 5 positive ints, got {self.widths}")


class Backbone(nn.Module):
    """(N, 3, H, W) images in [0, 1] -> {'s16': (N, C, H/16, W/16), 's8': (N, Cs, H/8, W/8), 's4': (N, w1, H/4, W/4)}."""

    stride = 16

    def __init__(self, config: BackboneConfig = BackboneConfig()) -> None:
        super().__init__()
        self.config = config
        w0, w1, w2, w3, w4 = config.widths
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.stem = conv_bn_relu(3, w0, 3, stride=2)  # /2
        self.stage1 = BasicBlock(w0, w1, stride=2)  # /4
        self.stage2 = BasicBlock(w1, w2, stride=2)  # /8
        self.stage3 = BasicBlock(w2, w3, stride=2)  # /16
        self.stage4 = BasicBlock(w3, w4, dilation=config.dilation)  # /16, dilated
        # Light FPN.
        self.lat16 = nn.Conv2d(w4, config.out_channels, 1)
        self.lat8_up = nn.Conv2d(w2, config.out_channels, 1)  # stride 8 -> pooled into the stride-16 output
        self.smooth16 = conv_bn_relu(config.out_channels, config.out_channels, 3)
        self.lat8 = nn.Conv2d(w2, config.skip_channels, 1)
        self.top8 = nn.Conv2d(config.out_channels, config.skip_channels, 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Backbone expects (N, 3, H, W) images, got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h % 16 or w % 16:
            raise ValueError(f"Backbone: image size {h}x{w} must be a multiple of 16")
        if torch.is_grad_enabled():
            x = torch.addcmul(-self.mean / self.std, images, 1.0 / self.std)  # (images - mean) / std in one pass
        else:  # inference: normalise straight into channels-last memory (the convs' layout), one pass instead of two
            x = torch.empty_like(images, memory_format=torch.channels_last)
            torch.addcmul(-self.mean / self.std, images, 1.0 / self.std, out=x)
        x = self.stem(x)
        c4 = self.stage1(x)  # (N, w1, H/4, W/4)
        c8 = self.stage2(c4)  # (N, w2, H/8, W/8)
        c16 = self.stage4(self.stage3(c8))  # (N, w4, H/16, W/16)
        p16 = self.smooth16(conv_act(self.lat16, c16, other=conv_act(self.lat8_up, F.avg_pool2d(c8, 2))))  # (N, C, H/16, W/16)
        p8 = conv_act(self.lat8, c8, other=F.interpolate(conv_act(self.top8, p16), scale_factor=2.0, mode="nearest"))  # (N, Cs, H/8, W/8)
        return {"s16": p16, "s8": p8, "s4": c4}


def fold_fine_level(s16: torch.Tensor, s8: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) + (N, Cs, 2h, 2w) -> (N, C + 4*Cs, h, w): the stride-8 map folded into channels
    (space-to-depth), so every stage that moves camera features moves both levels as one array."""
    return torch.cat([s16, F.pixel_unshuffle(s8, 2)], dim=1)


def unfold_fine_level(feats: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(..., C [+ 4*Cs], h, w) -> the stride-16 map (..., C, h, w) and the stride-8 map (..., Cs, 2h, 2w),
    None when nothing is folded in; the inverse of `fold_fine_level`."""
    if feats.shape[-3] == channels:
        return feats, None
    extra = feats.shape[-3] - channels
    if extra < 0 or extra % 4:
        raise ValueError(f"camera features have {feats.shape[-3]} channels: expected {channels}, or {channels} plus a "
                         "multiple of 4 (a folded stride-8 map)")
    lead = feats.shape[:-3]
    fine = F.pixel_shuffle(feats[..., channels:, :, :].reshape(-1, extra, *feats.shape[-2:]), 2)
    return feats[..., :channels, :, :], fine.view(*lead, *fine.shape[1:])
