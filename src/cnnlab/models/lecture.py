"""The lecture's own models: the block-based Fashion-MNIST CNN of its Keras table, the MLP baseline,
the dogs-vs-cats CNN of its visualization part, and the receptive-field example network."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch.nn as nn

from cnnlab.layers import Dropout
from cnnlab.models.registry import register_model
from cnnlab.ops.sizes import pool_output_size

__all__ = ["CatsDogsCNN", "FashionCNN", "MLP", "RFDemo", "conv3x3", "conv_block"]


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """``28`` or ``(28, 32)`` as ``(height, width)``."""
    return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    """3x3 convolution with padding 1: 'same' size at stride 1 (the lecture's Keras
    ``Conv2D(..., padding='same')``), ``ceil(H / stride)`` otherwise. ``bias=False`` when BatchNorm follows."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=bias)


def dense_head(in_features: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    """The lecture's head: flatten, dense-ReLU-BN, dropout, dense to the classes."""
    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(in_features, hidden),
            relu=nn.ReLU(inplace=True),
            bn=nn.BatchNorm1d(hidden),
            drop=Dropout(dropout),
            fc2=nn.Linear(hidden, num_classes),
        )
    )


def conv_block(in_channels: int, out_channels: int, dropout: float, *, conv1: nn.Module | None = None,
               conv2: nn.Module | None = None) -> nn.Sequential:
    """conv-ReLU-BN twice, 2x2 max pool, dropout: one block of the lecture's network. ``conv1``/``conv2``
    put another convolution in a conv's place (the reduced-complexity variants, :mod:`cnnlab.models.compact`);
    by default both are 3x3 'same' convs."""
    return nn.Sequential(
        OrderedDict(
            conv1=conv1 if conv1 is not None else conv3x3(in_channels, out_channels),
            relu1=nn.ReLU(inplace=True),
            bn1=nn.BatchNorm2d(out_channels),
            conv2=conv2 if conv2 is not None else conv3x3(out_channels, out_channels),
            relu2=nn.ReLU(inplace=True),
            bn2=nn.BatchNorm2d(out_channels),
            pool=nn.MaxPool2d(2),
            drop=Dropout(dropout),
        )
    )


class FashionCNN(nn.Module):
    """The lecture's block-based CNN (``fmnist_cnn.py``), layer for layer.

    For 1x28x28 input: two blocks of [conv3x3-ReLU-BN] x2 + maxpool 2 + dropout 0.25 (32 then 64
    channels), flatten (64*7*7 = 3136), dense 512-ReLU-BN-dropout 0.5, dense 10 (logits; the
    softmax lives in the loss). 1,677,674 trainable parameters; the 1,408 BatchNorm running
    statistics are what the lecture's Keras table calls "non-trainable" (1,679,082 together).
    Note the lecture's order: the activation comes *before* BatchNorm. Dropout is
    :class:`cnnlab.layers.Dropout` (same semantics, a cheaper CPU mask).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int | Sequence[int] = 28,
        widths: Sequence[int] = (32, 64),
        hidden: int = 512,
        dropout: float = 0.25,
        head_dropout: float = 0.5,
    ) -> None:
        super().__init__()
        h, w = image_hw(image_size)
        blocks, c = OrderedDict(), in_channels
        for i, width in enumerate(widths, 1):
            blocks[f"block{i}"] = conv_block(c, width, dropout)
            c, h, w = width, h // 2, w // 2
        self.features = nn.Sequential(blocks)
        self.classifier = dense_head(c * h * w, hidden, num_classes, head_dropout)

    def forward(self, x):
        return self.classifier(self.features(x))


class MLP(nn.Module):
    """Multi-layer perceptron baseline: flatten, then [Linear-ReLU-Dropout] per hidden width, then Linear.

    The default 784-512-512-10 has 669,706 parameters; the lecture reports "~88%" for an MLP on
    Fashion-MNIST.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int | Sequence[int] = 28,
        hidden: Sequence[int] = (512, 512),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        h, w = image_hw(image_size)
        layers, n = OrderedDict(flatten=nn.Flatten()), in_channels * h * w
        for i, width in enumerate(hidden, 1):
            layers[f"fc{i}"] = nn.Linear(n, width)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            layers[f"drop{i}"] = Dropout(dropout)
            n = width
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(OrderedDict(fc=nn.Linear(n, num_classes)))

    def forward(self, x):
        return self.classifier(self.features(x))


def _catsdogs_block(in_channels: int, mid_channels: int, out_channels: int, pool: nn.Module) -> nn.Sequential:
    """conv3x3-ReLU twice, then ``pool``: one block of the lecture's dogs-vs-cats network."""
    return nn.Sequential(
        OrderedDict(
            conv1=conv3x3(in_channels, mid_channels),
            relu1=nn.ReLU(inplace=True),
            conv2=conv3x3(mid_channels, out_channels),
            relu2=nn.ReLU(inplace=True),
            pool=pool,
        )
    )


class CatsDogsCNN(nn.Module):
    """The lecture's dogs-vs-cats CNN ("Cats and Dogs - CNN.ipynb" in its visualization part).

    For 3x150x150 input: four blocks of [conv3x3 (padding 1)-ReLU] x2 + max pool, with widths
    32, 64 | 128, 128 | 256, 512 | 512, 512 and maps 150 -> 75 -> 37 -> 18 -> 8; then channel
    dropout, flatten (512*8*8 = 32768), dense 512-ReLU, dense 1: one logit, dog vs cat (train it
    with ``BCEWithLogitsLoss``). 23,214,017 parameters, 16,777,728 of them in the first dense layer.
    ``features`` is the conv/pool trunk (blocks 1-4, output 512x8x8); ``classifier`` the rest.

    Two readings of the lecture's (torchsummary) table:

    * Its ``MaxPool2d-12`` takes 18x18 to 8x8. A 2x2 pool like the three before it would give 9x9
      and ``Linear(41472, 512)``, but the table's ``Linear-14`` has 16,777,728 = 32768*512 + 512
      parameters; so the last pool is ``MaxPool2d(kernel_size=3, stride=2)``: (18 - 3) // 2 + 1 = 8.
    * Its ``Dropout2d-13`` is listed with output [-1, 32768], i.e. it was applied after flattening,
      where (in old PyTorch) it acted as plain element-wise dropout. Here ``Dropout2d`` gets the
      4D map, which is what it means: it zeroes whole channels (Tompson et al. 2015, "Efficient
      object localization using convolutional networks"). It has no parameters either way.

    ``image_size`` other than 150 changes only the first dense layer's input size.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        image_size: int | Sequence[int] = 150,
        dropout: float = 0.5,
        hidden: int = 512,
    ) -> None:
        super().__init__()
        h, w = image_hw(image_size)
        for _ in range(3):  # three 2x2 pools, then the 3x3 stride-2 one
            h, w = h // 2, w // 2
        if h < 3 or w < 3:
            raise ValueError(f"image_size {image_size} is too small for catsdogs-cnn (at least 24)")
        h, w = pool_output_size(h, 3, stride=2), pool_output_size(w, 3, stride=2)
        self.features = nn.Sequential(
            OrderedDict(
                block1=_catsdogs_block(in_channels, 32, 64, nn.MaxPool2d(2)),
                block2=_catsdogs_block(64, 128, 128, nn.MaxPool2d(2)),
                block3=_catsdogs_block(128, 256, 512, nn.MaxPool2d(2)),
                block4=_catsdogs_block(512, 512, 512, nn.MaxPool2d(kernel_size=3, stride=2)),
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                drop=nn.Dropout2d(dropout),
                flatten=nn.Flatten(),
                fc1=nn.Linear(512 * h * w, hidden),
                relu=nn.ReLU(inplace=True),
                fc2=nn.Linear(hidden, num_classes),
            )
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class RFDemo(nn.Module):
    """The lecture's receptive-field example ``Net`` (from pytorch-receptive-field), exactly:
    ``Conv2d(3, 64, 7, stride=2, padding=3, bias=False)``, ``BatchNorm2d(64)``, ``ReLU(inplace=True)``,
    ``MaxPool2d(3, stride=2, padding=1)`` -- the stem of ResNet (He et al. 2015).

    3x256x256 -> 64x128x128 (conv; receptive field 7, jump 2) -> 64x64x64 (pool; receptive field
    11, jump 4), as the lecture's table says. There is no head: ``features`` holds the four layers
    under the lecture's names (``conv``, ``bn``, ``relu``, ``maxpool``) and ``classifier`` is
    ``nn.Identity()``, so the output is the 64-channel feature map.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False),
                bn=nn.BatchNorm2d(64),
                relu=nn.ReLU(inplace=True),
                maxpool=nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        )
        self.classifier = nn.Identity()

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model(name="fmnist-cnn")
def fmnist_cnn(*, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
               dropout: float = 0.25, head_dropout: float = 0.5) -> FashionCNN:
    """The lecture's Fashion-MNIST CNN (1,677,674 trainable parameters)."""
    return FashionCNN(in_channels, num_classes, image_size, dropout=dropout, head_dropout=head_dropout)


@register_model(name="mlp")
def mlp(*, in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
        hidden: Sequence[int] = (512, 512), dropout: float = 0.2) -> MLP:
    """The MLP baseline, 784-512-512-10 by default (669,706 parameters)."""
    return MLP(in_channels, num_classes, image_size, hidden=hidden, dropout=dropout)


@register_model(name="catsdogs-cnn", input_size=(3, 150, 150), num_classes=1)
def catsdogs_cnn(*, in_channels: int = 3, num_classes: int = 1, image_size: int = 150,
                 dropout: float = 0.5) -> CatsDogsCNN:
    """The lecture's dogs-vs-cats CNN: 3x150x150 in, one logit out (23,214,017 parameters)."""
    return CatsDogsCNN(in_channels, num_classes, image_size, dropout=dropout)


@register_model(name="rf-demo", input_size=(3, 256, 256), num_classes=None)
def rf_demo(*, in_channels: int = 3) -> RFDemo:
    """The lecture's receptive-field example (conv7x7/2-BN-ReLU-maxpool3x3/2): 3x256x256 -> 64x64x64 feature map."""
    return RFDemo(in_channels)
