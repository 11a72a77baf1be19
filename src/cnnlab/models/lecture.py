"""The lecture's Fashion-MNIST models: the block-based CNN of its Keras table and the MLP baseline."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch.nn as nn

from cnnlab.layers import Dropout
from cnnlab.models.registry import register_model

__all__ = ["FashionCNN", "MLP", "conv3x3"]


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 convolution, stride 1, 'same' padding (the lecture's Keras ``Conv2D(..., padding='same')``)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)


def _conv_block(in_channels: int, out_channels: int, dropout: float) -> nn.Sequential:
    """conv-ReLU-BN twice, 2x2 max pool, dropout: one block of the lecture's network."""
    return nn.Sequential(
        OrderedDict(
            conv1=conv3x3(in_channels, out_channels),
            relu1=nn.ReLU(inplace=True),
            bn1=nn.BatchNorm2d(out_channels),
            conv2=conv3x3(out_channels, out_channels),
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
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        blocks, c = OrderedDict(), in_channels
        for i, width in enumerate(widths, 1):
            blocks[f"block{i}"] = _conv_block(c, width, dropout)
            c, h, w = width, h // 2, w // 2
        self.features = nn.Sequential(blocks)
        self.classifier = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                fc1=nn.Linear(c * h * w, hidden),
                relu=nn.ReLU(inplace=True),
                bn=nn.BatchNorm1d(hidden),
                drop=Dropout(head_dropout),
                fc2=nn.Linear(hidden, num_classes),
            )
        )

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
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
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


@register_model(name="fmnist-cnn")
def fmnist_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
               dropout: float = 0.25, head_dropout: float = 0.5) -> FashionCNN:
    """The lecture's Fashion-MNIST CNN (1,677,674 trainable parameters)."""
    return FashionCNN(in_channels, num_classes, image_size, dropout=dropout, head_dropout=head_dropout)


@register_model(name="mlp")
def mlp(in_channels: int = 1, num_classes: int = 10, image_size: int = 28,
        hidden: Sequence[int] = (512, 512), dropout: float = 0.2) -> MLP:
    """The MLP baseline, 784-512-512-10 by default (669,706 parameters)."""
    return MLP(in_channels, num_classes, image_size, hidden=hidden, dropout=dropout)
