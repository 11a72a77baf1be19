"""Fixtures for the visualisation tests: a small CNN trained in a few seconds on the known-answer task
(:mod:`cnnlab.data.known_answer`, through :mod:`tests.viz.helpers`), a BatchNorm model in a mixed state, and every viz test on one thread."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import one_thread
from cnnlab.data.known_answer import masks_to_boxes
from cnnlab.viz.evaluate import evidence_masks
from tests.viz.helpers import KnownAnswer, SmallCNN, make_task


@pytest.fixture(autouse=True)
def _single_thread(single_thread):
    """Every viz test on one thread (a conftest cannot set ``pytestmark``)."""


@pytest.fixture(scope="session")
def known_answer() -> KnownAnswer:
    with one_thread():
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        model = SmallCNN()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
        t0 = time.perf_counter()
        for _ in range(400):  # fresh images every step: nothing to memorise but the object
            x, y, _ = make_task(64, gen)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        model.eval()
        x, y, box = make_task(300, torch.Generator().manual_seed(123))
        with torch.no_grad():
            right = model(x).argmax(1) == y
        keep = right & (y < 2)
        keep &= torch.cumsum(keep.long(), 0) <= 96
        mask = evidence_masks(masks_to_boxes(box), box.shape[1:])  # the region `viz --evaluate` scores
        return KnownAnswer(model, x[keep], y[keep], box[keep], mask[keep], float(right.float().mean()), seconds)


@pytest.fixture
def bn_model():
    """vgg-small (BatchNorm, dropout) in train mode, with one stage in eval mode, BatchNorm statistics
    already updated once, a frozen parameter, some .grad values set and a user's own forward hook."""
    from cnnlab.models import create_model

    torch.manual_seed(0)
    model = create_model("vgg-small", num_classes=10)
    model.train()
    model(torch.randn(4, 1, 28, 28))  # running stats and num_batches_tracked move off their defaults
    model.features[0].eval()  # a mixed mode must come back mixed, not all-train
    params = list(model.parameters())
    params[0].requires_grad_(False)
    for p in params[1:4]:
        p.grad = torch.randn_like(p)
    model.hook_calls = []  # the user's hook counts the forward passes it sees
    model.classifier.register_forward_hook(lambda m, i, o: model.hook_calls.append(1))
    return model
