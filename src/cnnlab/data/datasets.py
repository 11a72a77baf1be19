"""Named datasets as in-memory uint8 splits: train, a seeded validation split, test."""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Callable, Sequence

import numpy as np
import torch

from cnnlab.data.fashion_mnist import load_fashion_mnist
from cnnlab.data.folder import load_folder
from cnnlab.data.splits import FOLDER_PREFIX, DataSplits, DatasetError, channel_stats

__all__ = ["DataSplits", "DatasetError", "UnknownDatasetError", "load_dataset", "list_datasets", "channel_stats",
           "select_classes", "FASHION_MNIST_VAL_SIZE", "FOLDER_PREFIX"]


class UnknownDatasetError(DatasetError):
    pass


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
#: Fashion-MNIST's validation split when ``val_size`` is None: 5,000 of its 60,000 training images.
FASHION_MNIST_VAL_SIZE = 5000


def select_classes(data: DataSplits, classes: Sequence[str] | None = None, per_class: int | None = None) -> DataSplits:
    """Keep the images of ``classes`` (names, relabelled 0.. in the order given) in every split, and at most
    the first ``per_class`` training images of each class (in the split's seeded order, so a smaller
    ``per_class`` picks a subset of a larger one's images). Mean and std are those of the training
    images kept; ``info`` records ``per_class``."""
    if classes is None and per_class is None:
        return data
    names = list(data.classes) if classes is None else list(classes)
    unknown = [c for c in names if c not in data.classes]
    if unknown or len(set(names)) != len(names) or len(names) < 2:
        raise DatasetError(f"--classes {','.join(names)}: give two or more different class names of {data.name} "
                           f"({', '.join(data.classes)})" + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    if per_class is not None and per_class <= 0:
        raise DatasetError(f"--per-class must be a positive integer, got {per_class}")
    old = torch.tensor([data.classes.index(c) for c in names])
    relabel = torch.full((len(data.classes),), -1, dtype=torch.int64)
    relabel[old] = torch.arange(len(names))

    def keep(x: torch.Tensor, y: torch.Tensor, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        new = relabel[y]
        idx = torch.cat([torch.nonzero(new == c).flatten()[:limit] for c in range(len(names))]).sort().values
        return x[idx], new[idx]

    train_x, train_y = keep(data.train_x, data.train_y, per_class)
    counts = torch.bincount(train_y, minlength=len(names))
    if int(counts.min()) == 0:
        raise DatasetError(f"--classes: no training images of {names[int(counts.argmin())]} in {data.name}")
    val_x, val_y = keep(data.val_x, data.val_y, None)
    test_x, test_y = keep(data.test_x, data.test_y, None)
    mean, std = channel_stats(train_x)
    return dataclasses.replace(data, classes=tuple(names), train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y,
                               test_x=test_x, test_y=test_y, mean=mean, std=std,
                               info={**data.info, "per_class": per_class})


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def load_dataset(
    name: str = "fashion-mnist",
    data_dir: str | os.PathLike | None = None,
    *,
    val_size: int | float | None = None,
    subset: int | None = None,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    per_class: int | None = None,
    image_size: int | Sequence[int] | None = None,
    grayscale: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> DataSplits:
    """Load dataset ``name`` with a validation split of ``val_size`` images (default
    :data:`FASHION_MNIST_VAL_SIZE`) carved from the training set by a permutation seeded with
    ``seed``; ``subset`` keeps the first N of the remaining (shuffled) training images; ``classes``
    and ``per_class``: :func:`select_classes`.

    ``folder:PATH`` is an image folder (:func:`cnnlab.data.folder.load_folder`): there ``val_size``
    is a fraction of each class or a count, ``image_size`` and ``grayscale`` set the transform, and
    ``log`` receives its progress and warnings."""
    if name.startswith(FOLDER_PREFIX):
        path = name[len(FOLDER_PREFIX):]
        if not path.strip():
            raise UnknownDatasetError(f"--dataset {name!r}: give the image folder's path, folder:PATH (folder:. for "
                                      f"the current folder); valid: {', '.join(list_datasets())}, folder:PATH")
        if data_dir is not None:
            raise DatasetError(f"--data-dir applies to fashion-mnist; {name} names its own folder")
        data = load_folder(path, image_size=image_size, grayscale=grayscale, val_size=val_size,
                           subset=subset, seed=seed, log=log)
        _note_subset(data, subset, log)
        return select_classes(data, classes, per_class)
    if name not in _DATASETS:
        raise UnknownDatasetError(f"unknown dataset {name!r}; valid: {', '.join(list_datasets())}, folder:PATH")
    if image_size is not None or grayscale is not None:
        raise DatasetError(f"--image-size and --grayscale apply to image folders (folder:PATH), not {name}")
    if val_size is None:
        val_size = FASHION_MNIST_VAL_SIZE
    if not isinstance(val_size, int):
        raise DatasetError(f"--val-size for {name} is a count of images, got {val_size!r}")
    data = _DATASETS[name](data_dir, val_size=val_size, subset=subset, seed=seed)
    _note_subset(data, subset, log)
    return select_classes(data, classes, per_class)


def _note_subset(data: DataSplits, subset: int | None, log: Callable[[str], None] | None) -> None:
    """Say so when ``subset`` asks for more training images than there are (it then means all of them)."""
    if subset is not None and subset > len(data.train_y):
        msg = (f"note: --subset {subset} is more than the {len(data.train_y):,} training images of {data.name}; "
               "training on all of them")
        if log is not None:
            log(msg)
        else:
            warnings.warn(msg, UserWarning, stacklevel=3)
