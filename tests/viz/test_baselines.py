"""The removal baselines of occlusion, integrated gradients and faithfulness are black in every channel of an
RGB run (not channel 0's value copied into the others)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.data import normalize
from cnnlab.viz.attribution import black, integrated_gradients, occlusion
from cnnlab.viz.faithfulness import deletion_insertion

MEAN, STD = (0.5, 0.2, 0.8), (0.1, 0.3, 0.2)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()


def _black_image(n: int = 1, size: int = 8) -> torch.Tensor:
    return normalize(torch.zeros(n, 3, size, size, dtype=torch.uint8), MEAN, STD)


def test_black_is_pixel_zero_in_each_channel():
    assert torch.allclose(black(MEAN, STD), _black_image()[0, :, 0, 0])


def test_deleting_every_pixel_leaves_a_black_image():
    model, x = _model(), normalize(torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8), MEAN, STD)
    targets = torch.tensor([0, 2])
    r = deletion_insertion(model, x, torch.rand(2, 8, 8), targets, steps=4, baseline=black(MEAN, STD))
    with torch.no_grad():
        expected = F.softmax(model(_black_image(2)), 1).gather(1, targets.view(-1, 1))[:, 0]
    assert torch.allclose(r["deletion"][:, -1], expected, atol=1e-6)
    assert torch.allclose(r["insertion"][:, 0], expected, atol=1e-6)


def test_an_occlusion_patch_over_the_whole_image_is_black():
    model, x = _model(), normalize(torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8), MEAN, STD)
    attr = occlusion(model, x, torch.tensor([1]), patch_sizes=[8], stride=8, baseline=black(MEAN, STD))[8]
    with torch.no_grad():
        drop = F.softmax(model(x), 1)[0, 1] - F.softmax(model(_black_image()), 1)[0, 1]
    assert torch.allclose(attr, drop.expand_as(attr), atol=1e-6)


def test_integrated_gradients_start_from_the_black_image():
    model, x = _model(), normalize(torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8), MEAN, STD)
    black_ig = integrated_gradients(model, _black_image(), torch.tensor([0]), baseline=black(MEAN, STD))
    assert float(black_ig.abs().max()) < 1e-5  # from black to black: nothing to attribute
    assert float(integrated_gradients(model, x, torch.tensor([0]), baseline=black(MEAN, STD)).abs().sum()) > 0
