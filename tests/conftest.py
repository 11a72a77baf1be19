"""Shared fixtures: small generated datasets (learnable, on disk as IDX or in memory) and the real
Fashion-MNIST where installed. Plain helpers live in :mod:`tests.helpers`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from cnnlab.data import DataSplits
from cnnlab.data.datasets import channel_stats
from cnnlab.data.fashion_mnist import FASHION_MNIST_CLASSES
from tests.helpers import REAL_FMNIST, make_images, one_thread, write_fake_fmnist


@pytest.fixture(scope="session")
def fake_fmnist_dir(tmp_path_factory) -> Path:
    """A generated Fashion-MNIST folder: 2,000 training and 400 test images."""
    return write_fake_fmnist(tmp_path_factory.mktemp("fake-fmnist"), 2000, 400)


@pytest.fixture(scope="session")
def tiny_data() -> DataSplits:
    """In-memory splits of generated images: 512 train, 128 val, 128 test."""
    x, y = make_images(768, seed=3)
    tx, ty = make_images(128, seed=4)
    t = lambda a: torch.from_numpy(a).unsqueeze(1)  # noqa: E731
    lab = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    mean, std = channel_stats(t(x[:512]))
    return DataSplits("generated", FASHION_MNIST_CLASSES, t(x[:512]), lab(y[:512]), t(x[512:]), lab(y[512:]),
                      t(tx), lab(ty), mean, std, source="generated")


@pytest.fixture(scope="session")
def real_fmnist_dir() -> Path:
    if not (REAL_FMNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed in {REAL_FMNIST} (make test installs it)")
    return REAL_FMNIST


@pytest.fixture
def single_thread() -> Iterator[None]:
    """:func:`tests.helpers.one_thread` around a test (``pytestmark = pytest.mark.usefixtures("single_thread")``)."""
    with one_thread():
        yield


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    """Tests never read the user's CNNLAB_DATA_DIR and write only under tmp_path."""
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
