"""The lecture's "common CNN architecture patterns", each as a small model for 28x28 images: VGG stacks,
ResNet residual blocks, Inception modules and a global-average-pooling head.

All take ``in_channels``, ``num_classes`` and ``image_size`` (1, 10, 28 by default; 3x32x32 works as
well) and have the uniform face: ``features`` is the conv trunk (it outputs a feature map),
``classifier`` the head, and ``forward(x) == classifier(features(x))``. Convolutions followed by
BatchNorm have no bias (BatchNorm's shift replaces it). :class:`BasicBlock` and
:class:`InceptionModule` are building blocks for other families too.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn

from cnnlab.layers import Dropout
from cnnlab.models.lecture import conv3x3, image_hw
from cnnlab.models.registry import register_model

__all__ = ["BasicBlock", "GapCNN", "InceptionModule", "InceptionSmall", "ResNetSmall", "VGGSmall", "conv1x1",
           "conv_bn_relu"]


def conv1x1(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 (pointwise) convolution: mixes channels, keeps H, W at stride 1. No bias by default
    (BatchNorm usually follows)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=bias)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (``kernel_size // 2`` padding: 'same' size at stride 1, no bias) - BatchNorm - ReLU,
    as modules ``conv``, ``bn``, ``relu``."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2,
                           bias=False),
            bn=nn.BatchNorm2d(out_channels),
            relu=nn.ReLU(inplace=True),
        )
    )


# --------------------------------------------------------------------------------------------- VGG
def _vgg_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    """[conv3x3-BN-ReLU] x2, then 2x2 max pool: one VGG stage (H, W halved)."""
    return nn.Sequential(
        OrderedDict(
            conv1=conv3x3(in_channels, out_channels, bias=False),
            bn1=nn.BatchNorm2d(out_channels),
            relu1=nn.ReLU(inplace=True),
            conv2=conv3x3(out_channels, out_channels, bias=False),
            bn2=nn.BatchNorm2d(out_channels),
            relu2=nn.ReLU(inplace=True),
            pool=nn.MaxPool2d(2),
        )
    )


class VGGSmall(nn.Module):
    """VGG-style network: stacks of 3x3 convolutions with 2x2 max pools between them
    (Simonyan & Zisserman 2014, "Very deep convolutional networks for large-scale image
    recognition", arXiv:1409.1556), with BatchNorm as in torchvision's ``vgg*_bn``.

    One stage per entry of ``widths`` (default 32, 64, 128), each [conv3x3-BN-ReLU] x2 + maxpool 2:
    1x28x28 -> 32x14x14 -> 64x7x7 -> 128x3x3 (3x32x32 -> ... -> 128x4x4). Head: flatten,
    dense ``hidden``-ReLU-dropout, dense ``num_classes`` (logits). 584,618 parameters by default
    (the dense 1152 -> 256 layer is half of them).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int | Sequence[int] = 28,
        widths: Sequence[int] = (32, 64, 128),
        hidden: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        h, w = image_hw(image_size)
        stages, c = OrderedDict(), in_channels
        for i, width in enumerate(widths, 1):
            stages[f"stage{i}"] = _vgg_stage(c, width)
            c, h, w = width, h // 2, w // 2
        if h < 1 or w < 1:
            raise ValueError(f"image_size {image_size} is too small for {len(widths)} 2x2 pools")
        self.features = nn.Sequential(stages)
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                fc1=nn.Linear(c * h * w, hidden),
                relu=nn.ReLU(inplace=True),
                drop=Dropout(dropout),
                fc2=nn.Linear(hidden, num_classes),
            )
        )

    def forward(self, x):
        return self.classifier(self.features(x))


# ------------------------------------------------------------------------------------------ ResNet
class BasicBlock(nn.Module):
    """The basic residual block (He et al. 2015, "Deep residual learning for image recognition",
    figure 2): ``relu(F(x) + shortcut(x))`` with F = conv3x3(stride)-BN-ReLU-conv3x3-BN.

    (N, in_channels, H, W) -> (N, out_channels, ceil(H/stride), ceil(W/stride)). ``shortcut`` is
    ``nn.Identity()`` when the shapes already match, otherwise a 1x1 convolution with the same
    stride + BatchNorm (the paper's "option B" projection) as modules ``shortcut.conv``,
    ``shortcut.bn``. The ReLU comes after the addition.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_channels, out_channels, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                OrderedDict(conv=conv1x1(in_channels, out_channels, stride=stride), bn=nn.BatchNorm2d(out_channels))
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A small ResNet of :class:`BasicBlock` s, the paper's CIFAR-10 design (He et al. 2015,
    "Deep residual learning for image recognition", section 4.2): a conv3x3-BN-ReLU stem with
    ``widths[0]`` channels, then three stages of ``blocks_per_stage`` blocks with widths 16, 32, 64;
    the first block of stages 2 and 3 has stride 2 (and a projection shortcut). Head: global
    average pool, dense ``num_classes``. 6n+2 layers for n blocks per stage: the default n = 2 is
    a ResNet-14 (174,970 parameters); n = 3 is the paper's ResNet-20.

    1x28x28 -> 16x28x28 -> 32x14x14 -> 64x7x7 -> 64 -> 10 (3x32x32: ... -> 64x8x8). Module names
    read ``features.stage1.block1.conv1``. ``image_size`` is accepted for a uniform signature;
    the pooled head works at any size.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int | Sequence[int] = 28,
        widths: Sequence[int] = (16, 32, 64),
        blocks_per_stage: int = 2,
    ) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be at least 1, got {blocks_per_stage}")
        layers = OrderedDict(stem=conv_bn_relu(in_channels, widths[0]))
        c = widths[0]
        for i, width in enumerate(widths, 1):
            blocks = OrderedDict()
            for j in range(1, blocks_per_stage + 1):
                blocks[f"block{j}"] = BasicBlock(c, width, stride=2 if (i > 1 and j == 1) else 1)
                c = width
            layers[f"stage{i}"] = nn.Sequential(blocks)
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(
            OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(c, num_classes))
        )

    def forward(self, x):
        return self.classifier(self.features(x))


# --------------------------------------------------------------------------------------- Inception
class InceptionModule(nn.Module):
    """Inception module with dimension reduction (Szegedy et al. 2015, "Going deeper with
    convolutions", figure 2b): four parallel branches concatenated along the channels.

    * ``branch1``: 1x1 conv, ``ch1x1`` channels
    * ``branch2``: 1x1 conv to ``ch3x3red`` (the reduction), then 3x3 conv to ``ch3x3``
    * ``branch3``: 1x1 conv to ``ch5x5red``, then 5x5 conv to ``ch5x5`` (a true 5x5, as in the
      paper; torchvision's GoogLeNet uses 3x3 here)
    * ``branch4``: 3x3 max pool (stride 1, padding 1), then 1x1 conv to ``pool_proj``

    Each conv is conv-BN-ReLU with 'same' padding, so every branch keeps H, W:
    (N, in_channels, H, W) -> (N, ``out_channels``, H, W), ``out_channels`` =
    ch1x1 + ch3x3 + ch5x5 + pool_proj. The argument order is torchvision's ``Inception``.
    """

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int) -> None:
        super().__init__()
        self.branch1 = conv_bn_relu(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(OrderedDict(reduce=conv_bn_relu(in_channels, ch3x3red, kernel_size=1),
                                                 conv=conv_bn_relu(ch3x3red, ch3x3, kernel_size=3)))
        self.branch3 = nn.Sequential(OrderedDict(reduce=conv_bn_relu(in_channels, ch5x5red, kernel_size=1),
                                                 conv=conv_bn_relu(ch5x5red, ch5x5, kernel_size=5)))
        self.branch4 = nn.Sequential(OrderedDict(pool=nn.MaxPool2d(3, stride=1, padding=1),
                                                 proj=conv_bn_relu(in_channels, pool_proj, kernel_size=1)))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


# (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) per module: GoogLeNet's proportions, scaled down
_INCEPTION_SMALL = ((32, 16, 16, 32, 4, 8, 8), (64, 32, 32, 48, 8, 16, 16), (112, 48, 32, 64, 8, 16, 16))


class InceptionSmall(nn.Module):
    """A small GoogLeNet (Szegedy et al. 2015, "Going deeper with convolutions"): a conv3x3-BN-ReLU
    stem (32 channels), three :class:`InceptionModule` s (64, 112 and 144 channels out) with a 2x2
    max pool between consecutive ones, and GoogLeNet's head: global average pool, dropout, dense
    ``num_classes``. 1x28x28 -> 32x28x28 -> 64x28x28 -> 112x14x14 -> 144x7x7 -> 144 -> 10;
    65,394 parameters. ``image_size`` is accepted for a uniform signature; the pooled head works
    at any size.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int | Sequence[int] = 28,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        layers = OrderedDict(stem=conv_bn_relu(in_channels, _INCEPTION_SMALL[0][0]))
        for i, cfg in enumerate(_INCEPTION_SMALL, 1):
            if i > 1:
                layers[f"pool{i - 1}"] = nn.MaxPool2d(2)
            layers[f"inception{i}"] = InceptionModule(*cfg)
        self.features = nn.Sequential(layers)
        c = layers[f"inception{len(_INCEPTION_SMALL)}"].out_channels
        self.classifier = nn.Sequential(
            OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), drop=Dropout(dropout),
                        fc=nn.Linear(c, num_classes))
        )

    def forward(self, x):
        return self.classifier(self.features(x))


# ------------------------------------------------------------------------------- global pooling
class GapCNN(nn.Module):
    """A plain conv stack with a global-average-pooling head (the lecture's "one last layer type:
    global pooling"; Lin et al. 2013, "Network in network", arXiv:1312.4400).

    Trunk: [conv3x3-BN-ReLU] x2 + maxpool 2 at 32 and 64 channels, then [conv3x3-BN-ReLU] x2 at 128:
    1x28x28 -> 32x14x14 -> 64x7x7 -> 128x7x7. Head (``head="gap"``): a 1x1 conv to ``num_classes``
    channels (one map per class), global average pool, flatten -- no dense layer at all. (A 1x1
    conv and the average commute, so this equals GAP followed by ``Linear(128, num_classes)``.)

    Parameters at 1x28x28, 10 classes: 288,170 with the GAP head (1,290 in the head), 349,610 with
    ``head="flatten"`` (flatten 128*7*7 = 6,272 values, ``Linear(6272, 10)``: 62,730 in the head,
    which grows with the image: 81,930 at 32x32). Pooling first is what "reduces the complexity of
    the dense classification network".
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int | Sequence[int] = 28,
        widths: Sequence[int] = (32, 64, 128),
        head: str = "gap",
    ) -> None:
        super().__init__()
        if head not in ("gap", "flatten"):
            raise ValueError(f"head must be 'gap' or 'flatten', got {head!r}")
        h, w = image_hw(image_size)
        stages, c = OrderedDict(), in_channels
        for i, width in enumerate(widths, 1):
            last = i == len(widths)
            stages[f"stage{i}"] = nn.Sequential(
                OrderedDict(conv1=conv_bn_relu(c, width), conv2=conv_bn_relu(width, width),
                            **({} if last else {"pool": nn.MaxPool2d(2)}))
            )
            c = width
            if not last:
                h, w = h // 2, w // 2
        self.features = nn.Sequential(stages)
        if head == "gap":
            self.classifier = nn.Sequential(
                OrderedDict(conv=conv1x1(c, num_classes, bias=True), pool=nn.AdaptiveAvgPool2d(1),
                            flatten=nn.Flatten())
            )
        else:
            self.classifier = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc=nn.Linear(c * h * w, num_classes)))

    def forward(self, x):
        return self.classifier(self.features(x))


# ----------------------------------------------------------------------------------- registry
@register_model(name="vgg-small")
def vgg_small(*, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
              widths: Sequence[int] = (32, 64, 128), dropout: float = 0.5) -> VGGSmall:
    """VGG-style stacks of 3x3 convs (Simonyan & Zisserman 2014): 3 stages, 584,618 parameters."""
    return VGGSmall(in_channels, num_classes, image_size, widths=widths, dropout=dropout)


@register_model(name="resnet-small")
def resnet_small(*, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                 blocks_per_stage: int = 2, widths: Sequence[int] = (16, 32, 64)) -> ResNetSmall:
    """A CIFAR-style ResNet of basic blocks (He et al. 2015), 6n+2 layers; ResNet-14 by default (174,970 parameters)."""
    if len(widths) != 3 or not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise ValueError(f"widths must be three positive channel counts, one per stage, got {widths!r}")
    return ResNetSmall(in_channels, num_classes, image_size, widths=tuple(widths), blocks_per_stage=blocks_per_stage)


@register_model(name="inception-small")
def inception_small(*, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
                    dropout: float = 0.2) -> InceptionSmall:
    """A small GoogLeNet: three Inception modules with dimension reduction (Szegedy et al. 2015), 65,394 parameters."""
    return InceptionSmall(in_channels, num_classes, image_size, dropout=dropout)


@register_model(name="gap-cnn")
def gap_cnn(*, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, head: str = "gap") -> GapCNN:
    """A conv stack with a global-average-pooling head (Lin et al. 2013): 288,170 parameters
    (349,610 with ``head="flatten"``)."""
    return GapCNN(in_channels, num_classes, image_size, head=head)
