"""The lecture's "constrained filtering" layers: depthwise, pointwise, depthwise-separable (MobileNet),
grouped convolutions and ShuffleNet's channel shuffle.

Each is a thin, named ``nn.Module`` over ``nn.Conv2d`` (so that state dicts, MAC counting and every
tool that looks for ``nn.Conv2d`` keep working), with the arithmetic the lecture states checked at
construction: channels not divisible by the groups is a ``ValueError`` naming both numbers. The
lecture's example, ``Conv2d(16, 32, 3)`` (4,640 parameters) against a depthwise + pointwise pair
(16x3x3 + 32x16 + 32 biases = 688), is :func:`DepthwiseSeparableConv2d` with its defaults:
the depthwise conv has no bias (the pointwise conv's bias follows it, so a depthwise bias would only
add a constant the pointwise conv's bias already can).

References: Howard et al. 2017, "MobileNets" (arXiv:1704.04861); Krizhevsky et al. 2012 (grouped
convolution); Zhang et al. 2018, "ShuffleNet" (arXiv:1707.01083).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ChannelShuffle", "DepthwiseConv2d", "DepthwiseSeparableConv2d", "GroupedConv2d",
           "PointwiseConv2d", "ShuffleUnit", "channel_shuffle"]


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    _check_positive("in_channels", in_channels)
    _check_positive("out_channels", out_channels)
    _check_positive("groups", groups)
    for name, c in (("in_channels", in_channels), ("out_channels", out_channels)):
        if c % groups:
            valid = [g for g in range(1, min(in_channels, out_channels) + 1)
                     if in_channels % g == 0 and out_channels % g == 0]
            raise ValueError(f"{name}={c} is not divisible by groups={groups}; groups dividing both "
                             f"{in_channels} and {out_channels}: {', '.join(map(str, valid))}")


def _same(kernel_size: int, dilation: int = 1) -> int:
    return dilation * (kernel_size - 1) // 2


class GroupedConv2d(nn.Conv2d):
    """Group-wise convolution (AlexNet's two towers; the lecture's "trade-off between standard conv2D
    filtering and depth-wise filtering"): the ``in_channels`` are split into ``groups`` groups, and each
    group of ``out_channels / groups`` filters sees only its own group's ``in_channels / groups``
    channels. Parameters and MACs are ``1 / groups`` of the standard conv's. Padding defaults to 'same'
    (``kernel_size // 2`` at stride 1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, groups: int = 2,
                 stride: int = 1, padding: int | None = None, dilation: int = 1, bias: bool = True) -> None:
        _check_groups(in_channels, out_channels, groups)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=_same(kernel_size, dilation) if padding is None else padding,
                         dilation=dilation, groups=groups, bias=bias)


class DepthwiseConv2d(nn.Conv2d):
    """Depth-wise convolution: one ``kernel_size`` filter per input channel, no mixing across channels
    (``groups == in_channels``); with ``multiplier`` m, m filters per channel (``out = m * in``).
    ``in * m * k * k`` weights. No bias by default (a pointwise conv usually follows)."""

    def __init__(self, in_channels: int, kernel_size: int = 3, stride: int = 1, padding: int | None = None,
                 dilation: int = 1, multiplier: int = 1, bias: bool = False) -> None:
        _check_positive("in_channels", in_channels)
        _check_positive("multiplier", multiplier)
        super().__init__(in_channels, in_channels * multiplier, kernel_size, stride=stride,
                         padding=_same(kernel_size, dilation) if padding is None else padding,
                         dilation=dilation, groups=in_channels, bias=bias)


class PointwiseConv2d(nn.Conv2d):
    """Point-wise (1x1) convolution: "standard Conv2D with filter size 1x1"; mixes channels at each
    position. ``groups`` > 1 gives ShuffleNet's grouped 1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int, groups: int = 1, stride: int = 1,
                 bias: bool = True) -> None:
        _check_groups(in_channels, out_channels, groups)
        super().__init__(in_channels, out_channels, 1, stride=stride, groups=groups, bias=bias)


class DepthwiseSeparableConv2d(nn.Sequential):
    """MobileNet's depthwise-separable convolution: a depthwise ``kernel_size`` conv (spatial filtering per
    channel) followed by a pointwise 1x1 conv (mixing channels), as modules ``depthwise`` and
    ``pointwise``.

    ``norm=False`` (default): the two convs alone, the pointwise one with a bias: a drop-in
    replacement for ``nn.Conv2d(in, out, kernel_size)``; for (16, 32, 3) it has the lecture's 688
    parameters against the standard conv's 4,640. ``norm=True``: the paper's block, depthwise - BN -
    ReLU - pointwise - BN - ReLU (modules ``bn1``, ``relu1``, ``bn2``, ``relu2``), no conv biases.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, dilation: int = 1, bias: bool = True, norm: bool = False) -> None:
        _check_positive("out_channels", out_channels)
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            depthwise=DepthwiseConv2d(in_channels, kernel_size, stride, padding, dilation, bias=False))
        if norm:
            layers.update(bn1=nn.BatchNorm2d(in_channels), relu1=nn.ReLU(inplace=True))
        layers["pointwise"] = PointwiseConv2d(in_channels, out_channels, bias=bias and not norm)
        if norm:
            layers.update(bn2=nn.BatchNorm2d(out_channels), relu2=nn.ReLU(inplace=True))
        super().__init__(layers)
        self.in_channels, self.out_channels = in_channels, out_channels


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: (N, g * n, H, W) viewed as (N, g, n, H, W), transposed to
    (N, n, g, H, W) and flattened back, so that each group of the next grouped conv receives channels
    from every group of the previous one."""
    n, c, h, w = x.shape
    if c % groups:
        raise ValueError(f"channel_shuffle: {c} channels are not divisible by groups={groups}")
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        # channels-last: the channels are the innermost axis, so shuffle them there (one copy, and the
        # result stays channels-last); the NCHW view below would cost a layout round trip
        y = x.permute(0, 2, 3, 1).reshape(n, h, w, groups, c // groups).transpose(3, 4).reshape(n, h, w, c)
        return y.permute(0, 3, 1, 2)
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    """:func:`channel_shuffle` as a module (torchvision's ``nn.ChannelShuffle`` exists but does not
    support every memory format on every backend; this one is a view, a transpose and a copy)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        _check_positive("groups", groups)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class ShuffleUnit(nn.Module):
    """A ShuffleNet (v1) unit, Zhang et al. 2018, Fig. 2(b, c): grouped 1x1 conv (to ``bottleneck``
    channels) - BN - ReLU - channel shuffle - 3x3 depthwise conv (stride ``stride``) - BN - grouped 1x1
    conv - BN; at stride 1 added to the input (``in == out`` required), at stride 2 concatenated with a
    3x3/2 average pool of the input (the unit then adds ``out - in`` channels), then ReLU.

    ``bottleneck`` defaults to ``out // 4`` rounded up to a multiple of ``groups``, as in the paper. The
    first 1x1 conv is grouped unless ``first_grouped=False`` (the paper's first stage, where the input
    has too few channels).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int = 2, stride: int = 1,
                 bottleneck: int | None = None, first_grouped: bool = True) -> None:
        super().__init__()
        _check_positive("groups", groups)
        if stride not in (1, 2):
            raise ValueError(f"ShuffleUnit stride must be 1 or 2; got {stride}")
        branch = out_channels - in_channels if stride == 2 else out_channels
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"a stride-1 ShuffleUnit adds its input, so in_channels ({in_channels}) must equal "
                             f"out_channels ({out_channels}); use stride=2 to grow the channels")
        if branch < 1:
            raise ValueError(f"a stride-2 ShuffleUnit concatenates its input, so out_channels ({out_channels}) must "
                             f"exceed in_channels ({in_channels})")
        if bottleneck is None:
            bottleneck = -(-max(out_channels // 4, 1) // groups) * groups
        g1 = groups if first_grouped else 1
        _check_groups(in_channels, bottleneck, g1)
        _check_groups(bottleneck, branch, groups)
        self.stride = stride
        self.conv1 = PointwiseConv2d(in_channels, bottleneck, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(bottleneck)
        self.relu1 = nn.ReLU(inplace=True)
        self.shuffle = ChannelShuffle(groups)
        self.dwconv = DepthwiseConv2d(bottleneck, 3, stride=stride)
        self.bn2 = nn.BatchNorm2d(bottleneck)
        self.conv2 = PointwiseConv2d(bottleneck, branch, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shuffle(self.relu1(self.bn1(self.conv1(x))))
        y = self.bn3(self.conv2(self.bn2(self.dwconv(y))))
        if self.stride == 1:
            return self.relu(x + y)
        return self.relu(torch.cat([F.avg_pool2d(x, 3, stride=2, padding=1), y], 1))
