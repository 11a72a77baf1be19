"""A small generated Fashion-MNIST folder for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnlab.data.fashion_mnist import FASHION_MNIST_FILES
from cnnlab.data.idx import write_idx


def make_fake_fashion_mnist(folder: Path, n_train: int = 60, n_test: int = 20, *, gz: bool = True, seed: int = 0) -> dict:
    """Write a small Fashion-MNIST look-alike: 28x28 uint8 images, labels 0..9.

    Pixel (0, 0) of every image holds a unique id (train 0..n_train-1, test 200..), so a test can
    tell which image ended up where; every label is the id modulo 10.
    """
    rng = np.random.default_rng(seed)
    train_x = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    test_x = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    train_x[:, 0, 0] = np.arange(n_train)
    test_x[:, 0, 0] = 200 + np.arange(n_test)
    arrays = {
        "train_images": train_x,
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": test_x,
        "test_labels": ((200 + np.arange(n_test)) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for role, (name, _) in FASHION_MNIST_FILES.items():
        write_idx(folder / (name if gz else name.removesuffix(".gz")), arrays[role], compress=gz)
    return arrays
