"""Plain helpers shared by the tests (import them from here, never from a conftest): small learnable
generated images, a generated Fashion-MNIST folder, where the real one is installed, one intra-op
thread, the environment for running ``python -m cnnlab`` in a subprocess, and a small image folder
(:func:`write_folder`)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from cnnlab.data import write_idx
from cnnlab.data.fashion_mnist import FASHION_MNIST_FILES

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


def cli_env() -> dict[str, str]:
    """Environment for running `python -m cnnlab` in a subprocess (the package, no terminal)."""
    env = dict(os.environ)
    env.pop("CNNLAB_DATA_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


FORMATS = (".png", ".jpg", ".bmp")


def write_folder(root: Path, per_class: int = 32) -> Path:
    """Two learnable classes (a bright disc on dark, a dark square on bright) in mixed formats, sizes and
    modes, plus one corrupt file."""
    rng = np.random.default_rng(0)
    for label, cls in enumerate(("disc", "square")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            h, w = rng.integers(20, 48, 2)
            yy, xx = np.mgrid[:h, :w]
            if label == 0:
                a = np.where((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2, 220, 30)
            else:
                a = np.where((abs(yy - h / 2) < h / 4) & (abs(xx - w / 2) < w / 4), 30, 220)
            a = np.clip(a + rng.integers(-20, 20, a.shape), 0, 255).astype(np.uint8)
            im = Image.fromarray(a)
            if i % 2:
                im = Image.merge("RGB", (im, im.point(lambda v: v // 2), im))
            ext = FORMATS[i % 3]
            im.save(root / cls / f"{i:02d}{ext}", **({"quality": 95} if ext == ".jpg" else {}))
    (root / "disc" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root
