"""Image segmentation head: FCN with atrous context and transposed-convolution upsampling (seed Part 3).

Stride-16 features -> ASPP-lite (1x1 + two dilated 3x3 + image pooling) -> transposed conv x2 (to
stride 8) + skip from the FPN's stride-8 map -> transposed conv x2 (to stride 4) + skip from the
stride-4 stage -> 1x1 fuse -> 1x1 classifier. Logits come out at **stride 4** of the model input (cheap at run
time); training upsamples them bilinearly to the label resolution (`upsample_logits`), postprocess
does the same before the argmax.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from perception.backbone import conv_bn_relu
from schema.classes import SEG_CLASSES


@dataclass(frozen=True)
class SegHeadConfig:
    channels: int = 32
    rates: tuple[int, ...] = (2, 4)  # atrous rates of the dilated 3x3 branches (on the stride-16 map)
    num_classes: int = len(SEG_CLASSES)

    def __post_init__(self) -> None:
        if self.channels < 1 or self.num_classes < 2:
            raise ValueError(f"SegHeadConfig: channels >= 1 and num_classes >= 2, got {self.channels}, {self.num_classes}")


class ASPPLite(nn.Module):
    """Atrous spatial pyramid pooling, small: parallel 1x1, dilated 3x3s and global pooling, fused by 1x1."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, cout, 1)] + [conv_bn_relu(cin, cout, 3, dilation=r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = conv_bn_relu(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[-2], x.shape[-1]))
        return self.project(torch.cat(outs, dim=1))


class SegmentationHead(nn.Module):
    """Backbone features {'s16','s8','s4'} -> (N, num_classes, H/4, W/4) logits."""

    out_stride = 4

    def __init__(self, in_channels: int, skip8_channels: int, skip4_channels: int, config: SegHeadConfig = SegHeadConfig()) -> None:
        super().__init__()
        c = config.channels
        self.config = config
        self.aspp = ASPPLite(in_channels, c, config.rates)
        # k=4, s=2, p=1: out = (in-1)*2 - 2 + 3 + 1 = 2*in, exactly doubling.
        self.up8 = nn.ConvTranspose2d(c, c, 4, stride=2, padding=1, bias=False)
        self.skip8 = nn.Conv2d(skip8_channels, c, 1)
        self.fuse8 = conv_bn_relu(c, c, 3)
        # k=2, s=2, p=0: out = (in-1)*2 + 1*(2-1) + 1 = 2*in; non-overlapping, 4x cheaper at the largest map.
        self.up4 = nn.ConvTranspose2d(c, c, 2, stride=2, bias=False)
        self.skip4 = nn.Conv2d(skip4_channels, c, 1)
        self.fuse4 = conv_bn_relu(c, c, 1)  # 1x1 at stride 4: a 3x3 here would cost more than the rest of the head
        self.classifier = nn.Conv2d(c, config.num_classes, 1)

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        x = self.aspp(feats["s16"])  # (N, c, H/16, W/16)
        x = self.fuse8(F.relu(self.up8(x) + self.skip8(feats["s8"])))  # (N, c, H/8, W/8)
        x = self.fuse4(F.relu(self.up4(x) + self.skip4(feats["s4"])))  # (N, c, H/4, W/4)
        return self.classifier(x)  # (N, K, H/4, W/4)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(..., K, h, w) -> (..., K, H, W) bilinear, for the loss against full-resolution labels."""
    lead = logits.shape[:-3]
    x = logits.reshape(-1, *logits.shape[-3:])
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return x.reshape(*lead, *x.shape[-3:])
