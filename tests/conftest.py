"""Shared fixtures: small generated datasets (learnable, on disk as IDX or in memory) and the real
Fashion-MNIST where installed."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from cnnlab.data import DataSplits, write_idx
from cnnlab.data.datasets import channel_stats
from cnnlab.data.fashion_mnist import FASHION_MNIST_CLASSES, FASHION_MNIST_FILES

REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def make_images(n: int, seed: int, num_classes: int = 10, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """Learnable 28x28 uint8 images: class c is a bright horizontal band at rows 2c..2c+4, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n).astype(np.uint8)
    images = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c + 2 : 2 * c + 6, 4:24] = rng.integers(180, 256)
    return images, labels


def write_fake_fmnist(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tr_x, tr_y = make_images(n_train, seed)
    te_x, te_y = make_images(n_test, seed + 1)
    arrays = {"train_images": tr_x, "train_labels": tr_y, "test_images": te_x, "test_labels": te_y}
    for role, (name, _) in FASHION_MNIST_FILES.items():
        write_idx(folder / name, arrays[role])
    return folder


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


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread, restored afterwards: on a busy 2-core machine two threads waiting on each
    other make small forward passes 10-100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def single_thread() -> Iterator[None]:
    """:func:`one_thread` around a test (``pytestmark = pytest.mark.usefixtures("single_thread")``)."""
    with one_thread():
        yield


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    """Tests never read the user's CNNLAB_DATA_DIR and write only under tmp_path."""
    monkeypatch.delenv("CNNLAB_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def cli_env() -> dict[str, str]:
    """Environment for running `python -m cnnlab` in a subprocess (the package, no terminal)."""
    env = dict(os.environ)
    env.pop("CNNLAB_DATA_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env
