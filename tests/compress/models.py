"""Small models shared by the compression tests."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnlab.models import FashionCNN

TINY = {"widths": (4, 8), "hidden": 16}  # fmnist-cnn's layers (conv-ReLU-BN, flatten, dense), few channels


def randomize_bn(model: nn.Module, seed: int = 0, negative: float = 0.0) -> nn.Module:
    """BatchNorm statistics and affine parameters that are not the identity, a ``negative`` share of the scales
    negative (then BatchNorm no longer commutes with ReLU and max pooling: quantize must keep it); eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                sign = torch.where(torch.rand(n, generator=g) < negative, -1.0, 1.0) if negative else 1.0
                m.weight.copy_((torch.rand(n, generator=g) + 0.5) * sign)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
    return model.eval()


def tiny_cnn(seed: int = 0) -> FashionCNN:
    """fmnist-cnn's architecture with 4 and 8 channels and 16 hidden units, seeded, BatchNorm randomised."""
    torch.manual_seed(seed)
    return randomize_bn(FashionCNN(**TINY), seed)
