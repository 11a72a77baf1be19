"""A small CNN trained on the reference math follows nn.Conv2d's loss curve."""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from cnnlab.ops import ReferenceAvgPool2d, ReferenceConv2d, ReferenceMaxPool2d, to_reference
from tests.helpers import make_images


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, padding_mode="reflect"), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding="same", groups=2), nn.ReLU(), nn.AvgPool2d(2, ceil_mode=True),
        nn.Flatten(), nn.Linear(8 * 2 * 2, 4),
    )


def test_reference_cnn_follows_the_same_loss_curve():
    images, labels = make_images(64, seed=3, num_classes=4, size=14)
    x = torch.from_numpy(images).double().unsqueeze(1)
    x = (x - x.mean()) / x.std()
    y = torch.from_numpy(labels).long()
    torch.manual_seed(0)
    model = small_cnn().double()
    reference = to_reference(copy.deepcopy(model))
    assert sum(isinstance(m, (ReferenceConv2d, ReferenceMaxPool2d, ReferenceAvgPool2d)) for m in reference.modules()) == 5

    curves = []
    for net in (model, reference):
        opt = torch.optim.SGD(net.parameters(), lr=0.2, momentum=0.9)
        losses = []
        for step in range(12):
            batch = slice(16 * (step % 4), 16 * (step % 4) + 16)
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        curves.append(np.array(losses))
    torch_curve, reference_curve = curves
    assert torch_curve[-1] < torch_curve[0] * 0.8  # it did learn something
    # float64: the two implementations agree to rounding, compounded over 12 steps
    np.testing.assert_allclose(reference_curve, torch_curve, rtol=1e-9, atol=1e-12)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-8, atol=1e-10)


def test_reference_modules_keep_the_state_dict_format():
    conv = nn.Conv2d(3, 5, 3, padding=1)
    ref = ReferenceConv2d(3, 5, 3, padding=1)
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(ref(x), conv(x), rtol=1e-5, atol=1e-5)
    assert ref(x).dtype == torch.float32
