"""What every dataset loader gives and shares: :class:`DataSplits` (train, validation and test images
in memory), its error type, and the per-channel statistics that normalise a dataset."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from cnnlab.errors import CnnlabError

__all__ = ["DataSplits", "DatasetError", "FOLDER_PREFIX", "channel_stats"]

#: ``--dataset folder:PATH``: an image folder (:mod:`cnnlab.data.folder`)
FOLDER_PREFIX = "folder:"


class DatasetError(CnnlabError):
    """A dataset setting (name, split size, subset) is not valid for the data at hand."""


@dataclass
class DataSplits:
    """A dataset held in memory: images uint8 (N, C, H, W), labels int64 (N,). (An image folder larger
    than its memory limit is memory-mapped from its disk cache instead: :mod:`cnnlab.data.folder`.)

    ``mean`` and ``std`` are per-channel statistics of the training images in [0, 1] units; the
    test split is meant for final evaluation only.

    ``evidence``, for a dataset whose answer is known (``known-answer``): per split (``"train"``, ``"val"``,
    ``"test"``), int64 (N, 4) boxes (top, left, bottom, right; bottom and right exclusive) around the pixels
    each image's class depends on, (0, 0, 0, 0) where an image has none; None for other datasets.
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
    evidence: dict[str, torch.Tensor] | None = None

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def normalised_as(self, info: Mapping[str, Any]) -> "DataSplits":
        """These splits with the mean and std a run recorded (``info``: its ``config.json["data"]``), so
        that a subset, a class selection or a transfer source does not change how images are normalised."""
        if "mean" not in info or "std" not in info:
            return self
        return dataclasses.replace(self, mean=tuple(info["mean"]), std=tuple(info["std"]))

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
    """Per-channel mean and (sample) std of uint8 images (N, C, H, W), in [0, 1] units.

    Exact integer sums over chunks of about 4M values, so a memory-mapped dataset larger than
    memory is read once and never held as floats.
    """
    n_images, channels = images.shape[:2]
    chunk = max(1, (1 << 22) // max(1, images[0].numel())) if n_images else 1
    total = [0] * channels
    squares = [0] * channels
    for start in range(0, n_images, chunk):
        x = images[start : start + chunk].to(torch.int64)
        total = [t + int(v) for t, v in zip(total, x.sum(dim=(0, 2, 3)))]
        squares = [q + int(v) for q, v in zip(squares, x.square().sum(dim=(0, 2, 3)))]
    n = max(n_images * int(images.shape[2]) * int(images.shape[3]), 2)
    mean = [t / n / 255.0 for t in total]
    var = [(q * n - t * t) / (n * (n - 1)) / 255.0**2 for t, q in zip(total, squares)]
    return tuple(round(v, 6) for v in mean), tuple(round(max(math.sqrt(v), 1e-6), 6) for v in var)
