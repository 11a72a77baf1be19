"""Named datasets as in-memory uint8 splits: train, a seeded validation split, test."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from cnnlab.data.fashion_mnist import load_fashion_mnist

__all__ = ["DataSplits", "DatasetError", "UnknownDatasetError", "load_dataset", "list_datasets", "channel_stats"]


class DatasetError(ValueError):
    """A dataset setting (name, split size, subset) is not valid for the data at hand."""


class UnknownDatasetError(DatasetError):
    pass


@dataclass
class DataSplits:
    """A dataset held in memory: images uint8 (N, C, H, W), labels int64 (N,).

    ``mean`` and ``std`` are per-channel statistics of the training images in [0, 1] units; the
    test split is meant for final evaluation only.
    """

    name: str
    classes: tuple[str, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""
    info: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        """JSON-ready facts a run needs to preprocess new images the same way."""
        return {
            "name": self.name,
            "source": self.source,
            "classes": list(self.classes),
            "in_channels": self.in_channels,
            "image_size": list(self.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "sizes": {"train": len(self.train_y), "val": len(self.val_y), "test": len(self.test_y)},
            **self.info,
        }


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in [0, 1] units."""
    x = images.double().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)


def _split(
    name: str,
    classes: tuple[str, ...],
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    val_size: int,
    subset: int | None,
    seed: int,
    source: str,
) -> DataSplits:
    n = len(train_x)
    if not 0 <= val_size < n:
        raise DatasetError(f"--val-size {val_size} must be between 0 and {n - 1} (the training set has {n} images)")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    if subset is not None:
        if subset <= 0:
            raise DatasetError(f"--subset must be positive, got {subset}")
        train_idx = train_idx[:subset]

    def t(x: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(x))
        return x.unsqueeze(1) if x.ndim == 3 else x

    def lab(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64))

    tr_x = t(train_x[train_idx])
    mean, std = channel_stats(tr_x)
    return DataSplits(
        name=name,
        classes=classes,
        train_x=tr_x,
        train_y=lab(train_y[train_idx]),
        val_x=t(train_x[val_idx]),
        val_y=lab(train_y[val_idx]),
        test_x=t(test_x),
        test_y=lab(test_y),
        mean=mean,
        std=std,
        source=source,
        info={"val_size": val_size, "subset": subset, "split_seed": seed},
    )


def _fashion_mnist(data_dir, *, val_size, subset, seed) -> DataSplits:
    raw = load_fashion_mnist(data_dir)
    return _split(
        "fashion-mnist", raw.classes, raw.train_images, raw.train_labels, raw.test_images, raw.test_labels,
        val_size=val_size, subset=subset, seed=seed, source=raw.source,
    )


_DATASETS: dict[str, Callable[..., DataSplits]] = {"fashion-mnist": _fashion_mnist}


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def load_dataset(
    name: str = "fashion-mnist",
    data_dir: str | os.PathLike | None = None,
    *,
    val_size: int = 5000,
    subset: int | None = None,
    seed: int = 0,
) -> DataSplits:
    """Load dataset ``name`` with a validation split of ``val_size`` images carved from the
    training set by a permutation seeded with ``seed``; ``subset`` keeps the first N of the
    remaining (shuffled) training images."""
    if name not in _DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; valid: {', '.join(list_datasets())}")
    return _DATASETS[name](data_dir, val_size=val_size, subset=subset, seed=seed)
