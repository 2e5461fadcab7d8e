"""Inference preparation of a BEVStreamModel: one-time rewrites that make the streaming forward cheaper
without changing what it computes beyond float rounding (tests/perception/test_inference_prep.py).

`prepare_for_inference(model)` runs once after the weights are loaded (runtime.model's adapter). It
- stores the BEV side (BEV encoder, video module, heads) channels-last, the layout oneDNN's convolutions
  are fastest in on CPU (the camera side already is), and leaves the BEV raster channels-last between them;
- packs every convolution's weight once into oneDNN's blocked layout, with its batch norm folded in
  (`PackedConv`), so a call neither folds nor reorders weights; and lets the call sites fuse the ReLU /
  sigmoid / tanh and the residual or skip addition that follow a convolution into it (`conv_act`).
Training never calls it; with autograd on, or on a module not prepared, `conv_act` is the plain
`act(conv(x) [+ other])`, so `forward_clip` and the training path are unchanged.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

_UNARY = {"none": lambda x: x, "relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": F.gelu}  # gelu: exact (erf)
_INPLACE = {"sigmoid": torch.sigmoid_, "tanh": torch.tanh_, "gelu": lambda x: F.gelu(x)}


# ---------------------------------------------------------------- batch norm folded into the conv


def conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """bn(conv(x)); in eval mode as one convolution with the batch norm folded into its weights and bias
    (same result, one pass over the activations fewer)."""
    if bn.training:
        return bn(conv(x))
    weight, bias = folded_conv_bn(conv, bn)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (Cout,)
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return conv.weight * scale.view(-1, 1, 1, 1), bias


def folded_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The eval-mode conv weight and bias with the batch norm folded in. Without autograd they are cached
    on the conv, keyed by the identity and in-place version of every tensor they come from (so loading or
    training weights refreshes them): the same tensors, not recomputed every tick."""
    if torch.is_grad_enabled():
        return _fold(conv, bn)
    srcs = (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
    key = tuple((t.data_ptr(), t._version) if t is not None else None for t in srcs) + (bn.eps,)
    cached = conv.__dict__.get("_folded_bn")
    if cached is None or cached[0] != key:
        cached = (key, *_fold(conv, bn))
        conv.__dict__["_folded_bn"] = cached
    return cached[1], cached[2]


def depthwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A depthwise conv run channels-last: on CPU the contiguous-layout depthwise kernel is ~20x slower."""
    cl = torch.channels_last
    return F.conv2d(x.contiguous(memory_format=cl), conv.weight.contiguous(memory_format=cl), conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)


# ---------------------------------------------------------------- packed, fused convolutions


class PackedConv:
    """A 2D convolution for inference: (weight, bias) with any batch norm folded in, the weight packed by
    oneDNN per input shape (packing picks the kernel for the shape), an optional fused `act(conv(x) + other)`.
    Inputs are channels-last float32 (B, Cin, H, W); outputs channels-last."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d) -> None:
        self.weight = weight.detach().contiguous(memory_format=torch.channels_last)
        self.bias = None if bias is None else bias.detach().contiguous()
        self.stride, self.padding, self.dilation, self.groups = list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups
        self._packed: dict[tuple, torch.Tensor] = {}

    def packed(self, shape: torch.Size) -> torch.Tensor:
        key = tuple(shape)
        w = self._packed.get(key)
        if w is None:
            w = torch._C._nn.mkldnn_reorder_conv2d_weight(self.weight.to_mkldnn(), self.padding, self.stride, self.dilation, self.groups, list(key))
            self._packed[key] = w
        return w

    def __call__(self, x: torch.Tensor, act: str = "none", other: torch.Tensor | None = None) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        w = self.packed(x.shape)
        if other is None:
            return torch.ops.mkldnn._convolution_pointwise(x, w, self.bias, self.padding, self.stride, self.dilation, self.groups, act, [],
                                                           "none" if act == "gelu" else "")
        other = other.contiguous(memory_format=torch.channels_last)
        fused = act if act == "relu" else None  # oneDNN fuses only a ReLU after the add; the rest run in place after
        y = torch.ops.mkldnn._convolution_pointwise.binary(x, other, w, self.bias, self.padding, self.stride, self.dilation, self.groups,
                                                           "add", None, fused, [], "")
        return y if act in ("none", "relu") else _INPLACE[act](y)


def is_packed(conv: nn.Module) -> bool:
    """The conv runs through a PackedConv now (prepared, and no autograd)."""
    return "_packed_conv" in conv.__dict__ and not torch.is_grad_enabled()


def conv_act(conv: nn.Conv2d, x: torch.Tensor, act: str = "none", other: torch.Tensor | None = None,
             bn: nn.BatchNorm2d | None = None) -> torch.Tensor:
    """act(bn(conv(x)) + other): through the conv's PackedConv when prepared and without autograd, else the
    plain ops (`other` is added after the conv, as `conv(x) + other`)."""
    packed = conv.__dict__.get("_packed_conv")
    if packed is not None and not torch.is_grad_enabled():
        return packed(x, act, other)
    y = conv_bn(conv, bn, x) if bn is not None else conv(x)
    if other is not None:
        y = y + other
    return _UNARY[act](y)


def _conv_bn_pairs(model: nn.Module) -> dict[int, nn.BatchNorm2d]:
    """id(conv) -> the batch norm that follows it, for the blocks that declare their pairs (`conv_bn_pairs()`,
    perception.backbone's ConvBNReLU and BasicBlock)."""
    pairs: dict[int, nn.BatchNorm2d] = {}
    for m in model.modules():
        for conv, bn in getattr(m, "conv_bn_pairs", lambda: [])():
            pairs[id(conv)] = bn
    return pairs


def _pack_convs(model: nn.Module) -> int:
    """Attach a PackedConv (batch norm folded in) to every plain float Conv2d of `model`; returns how many."""
    pairs = _conv_bn_pairs(model)
    n = 0
    with torch.no_grad():
        for m in model.modules():
            if type(m) is not nn.Conv2d or m.padding_mode != "zeros" or isinstance(m.padding, str):
                continue
            bn = pairs.get(id(m))
            weight, bias = _fold(m, bn) if bn is not None else (m.weight, m.bias)
            m.__dict__["_packed_conv"] = PackedConv(weight, bias, m)
            n += 1
    return n


def prepare_for_inference(model: nn.Module, channels_last: bool = True, pack: bool = True, reuse_grids: bool = True) -> nn.Module:
    """Rewrite `model` (a BEVStreamModel in eval mode, weights loaded) in place for the streaming forward.
    Call again after loading other weights (the packed convolutions copy them). The two levers can be
    left off one by one (bench/model.py measures each): `channels_last` for the BEV side, `pack` for the
    packed, fused convolutions, `reuse_grids` for the video module's sampling grids built from cached base
    grids (perception.video.affine_grid)."""
    if model.training:
        raise ValueError("prepare_for_inference: put the model in eval mode first (model.eval())")
    if channels_last:
        for mod in (model.bev_encoder, model.video, model.detection_head, model.road_head):
            if mod is not None:
                mod.to(memory_format=torch.channels_last)
        model.bev_encoder.channels_last_out = True
    if pack:
        _pack_convs(model)
    if model.video is not None:
        model.video.reuse_grids = reuse_grids
    return model


def run_sequential(seq: nn.Sequential, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
    """seq(x) (+ other): prepared, each Conv2d runs packed with the ReLU after it fused, and `other` is added
    inside the last module when it is a conv; else the plain modules."""
    mods = list(seq)
    if not any(is_packed(m) for m in mods):
        y = seq(x)
        return y if other is None else y + other
    i = 0
    while i < len(mods):
        m = mods[i]
        relu = i + 1 < len(mods) and isinstance(mods[i + 1], nn.ReLU)
        last = i + 1 + relu == len(mods)
        if is_packed(m):
            x = conv_act(m, x, "relu" if relu else "none", other if last and not relu else None)
            if last and not relu:
                other = None
            i += 1 + relu
        else:
            x = m(x)
            i += 1
    return x if other is None else x + other
