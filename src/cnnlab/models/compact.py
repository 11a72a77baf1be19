"""Reduced-complexity variants of the lecture's Fashion-MNIST CNN (the lecture's "Reduced complexity CNN
architectures"): the same macro-structure as ``fmnist-cnn`` -- blocks of [conv-ReLU-BN] x2 + 2x2 max
pool + dropout, then a head -- with the 3x3 convolutions replaced by a constrained kind, and optionally
the 1.6M-parameter dense head replaced by global average pooling ("global pooling"), so that a
comparison (``cnnlab compare``) changes one thing at a time.

The first conv of the first block sees one input channel; a depthwise, grouped or sparse conv of one
channel is no saving (and grouped needs the channels to divide), so it stays a standard conv in every
variant. Every other 3x3 conv is replaced:

- ``separable``: :class:`~cnnlab.layers.DepthwiseSeparableConv2d` (MobileNet; depthwise 3x3 then 1x1);
- ``grouped``: :class:`~cnnlab.layers.GroupedConv2d` with ``groups`` groups;
- ``shuffle``: the grouped conv followed by a :class:`~cnnlab.layers.ChannelShuffle` (ShuffleNet), so
  that the next grouped conv's groups each see channels from every group of this one;
- ``sparse``: :class:`~cnnlab.layers.PredefinedSparseConv2d`, ``k`` of the 9 kernel positions kept.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch.nn as nn

from cnnlab.layers import ChannelShuffle, DepthwiseSeparableConv2d, GroupedConv2d, PredefinedSparseConv2d
from cnnlab.models.lecture import conv3x3, conv_block, dense_head, image_hw
from cnnlab.models.registry import register_model

__all__ = ["CONV_KINDS", "HEADS", "CompactCNN"]

CONV_KINDS = ("standard", "separable", "grouped", "shuffle", "sparse")
HEADS = ("dense", "gap")


def _conv(kind: str, in_channels: int, out_channels: int, groups: int, k: int) -> nn.Module:
    if kind == "standard":
        return conv3x3(in_channels, out_channels)
    if kind == "separable":
        return DepthwiseSeparableConv2d(in_channels, out_channels)
    if kind == "grouped":
        return GroupedConv2d(in_channels, out_channels, 3, groups=groups)
    if kind == "shuffle":
        return nn.Sequential(OrderedDict(conv=GroupedConv2d(in_channels, out_channels, 3, groups=groups),
                                         shuffle=ChannelShuffle(groups)))
    if kind == "sparse":
        return PredefinedSparseConv2d(in_channels, out_channels, 3, padding=1, k=k)
    raise ValueError(f"unknown conv kind {kind!r}; valid: {', '.join(CONV_KINDS)}")


class CompactCNN(nn.Module):
    """``fmnist-cnn``'s structure with a choice of convolution (``conv``: one of :data:`CONV_KINDS`) and of
    head (``head``: ``dense``, the lecture's flatten-512-10, or ``gap``: global average pooling then one
    linear layer). ``widths``: one block per entry (``fmnist-cnn``: 32, 64). ``groups``: for grouped and
    shuffle convs; ``k``: kernel positions kept by the sparse conv.

    With ``conv="standard", head="dense"`` it is ``fmnist-cnn`` module for module (same names, same
    parameter count, 1,677,674), which a test checks.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int | Sequence[int] = 28,
        conv: str = "separable",
        head: str = "dense",
        widths: Sequence[int] = (32, 64),
        hidden: int = 512,
        dropout: float = 0.25,
        head_dropout: float = 0.5,
        groups: int = 4,
        k: int = 4,
    ) -> None:
        super().__init__()
        if conv not in CONV_KINDS:
            raise ValueError(f"unknown conv kind {conv!r}; valid: {', '.join(CONV_KINDS)}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
        h, w = image_hw(image_size)
        blocks, c = OrderedDict(), in_channels
        for i, width in enumerate(widths, 1):
            kind1 = "standard" if i == 1 else conv
            blocks[f"block{i}"] = conv_block(c, width, dropout, conv1=_conv(kind1, c, width, groups, k),
                                             conv2=_conv(conv, width, width, groups, k))
            c, h, w = width, h // 2, w // 2
        self.features = nn.Sequential(blocks)
        if head == "dense":
            self.classifier = dense_head(c * h * w, hidden, num_classes, head_dropout)
        else:
            self.classifier = nn.Sequential(
                OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(c, num_classes)))

    def forward(self, x):
        return self.classifier(self.features(x))


def _variant(name: str, doc: str, **fixed):
    def build(*, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, **kwargs) -> CompactCNN:
        return CompactCNN(in_channels, num_classes, image_size, **{**fixed, **kwargs})

    build.__name__ = name.replace("-", "_")
    build.__doc__ = doc
    return register_model(name=name)(build)


fmnist_separable = _variant("fmnist-separable", "fmnist-cnn with depthwise-separable 3x3 convs (MobileNet).",
                            conv="separable")
fmnist_grouped = _variant("fmnist-grouped", "fmnist-cnn with 4-group 3x3 convs.", conv="grouped")
fmnist_shuffle = _variant("fmnist-shuffle", "fmnist-cnn with 4-group 3x3 convs, each followed by a channel "
                          "shuffle (ShuffleNet).", conv="shuffle")
fmnist_sparse = _variant("fmnist-sparse", "fmnist-cnn with pre-defined sparse 3x3 convs, 4 of 9 positions.",
                         conv="sparse")
fmnist_gap = _variant("fmnist-gap", "fmnist-cnn with global average pooling instead of its dense head.",
                      conv="standard", head="gap")
fmnist_mobile = _variant(
    "fmnist-mobile",
    "The compact combination: depthwise-separable convs, a global-average-pooling head, four blocks of 16, 64, "
    "128 and 256 channels (a channel at 3x3 costs 87x less than at 28x28, so the width goes where the maps are "
    "small) and dropout 0.1 (the small model underfits at 0.25).",
    conv="separable", head="gap", widths=(16, 64, 128, 256), dropout=0.1)
