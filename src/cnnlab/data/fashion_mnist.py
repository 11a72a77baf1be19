"""Fashion-MNIST (Xiao et al. 2017): where to find it, how to fetch it, how to load it.

Search order for the four IDX files: an explicit ``data_dir``, ``$CNNLAB_DATA_DIR``, Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist``) and the user cache
``~/.cache/cnnlab/fashion-mnist`` (filled by :func:`download_fashion_mnist`). Files may be gzipped
(``*.gz``) or raw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnlab._io import file_digest
from cnnlab.data.download import MIRROR_ENV, DownloadError, download
from cnnlab.data.idx import IDXError, read_idx
from cnnlab.errors import CnnlabError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "DEBIAN_DIR",
    "DataNotFoundError",
    "RawSplits",
    "candidate_dirs",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "download_fashion_mnist",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

#: role -> (file name, md5 of the upstream gzip file, as published by Zalando Research)
FASHION_MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
    "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
}
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = (
    "install Debian's package (sudo apt-get install dataset-fashion-mnist), "
    "run `cnnlab data download` on a machine with a network, "
    "or point --data-dir / CNNLAB_DATA_DIR at a folder holding them"
)


class DataNotFoundError(CnnlabError, FileNotFoundError):
    """The Fashion-MNIST files are in none of the places searched."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cnnlab" / "fashion-mnist"


def candidate_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched, in order."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get("CNNLAB_DATA_DIR"):
        dirs.append(Path(os.environ["CNNLAB_DATA_DIR"]))
    dirs += [DEBIAN_DIR, cache_dir()]
    return dirs


def _resolve(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name, folder / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def find_fashion_mnist(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Return role -> path of the four files from the first folder that holds all four.

    An explicit ``data_dir`` that lacks them is an error (it is never silently skipped).
    """
    names = [name for name, _ in FASHION_MNIST_FILES.values()]
    for i, folder in enumerate(candidate_dirs(data_dir)):
        found = {role: _resolve(folder, name) for role, (name, _) in FASHION_MNIST_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
        if i == 0 and data_dir is not None:
            missing = [FASHION_MNIST_FILES[r][0] for r, p in found.items() if p is None]
            raise DataNotFoundError(
                f"--data-dir {folder}: missing {', '.join(missing)} (expected {', '.join(names)}, gzipped or raw); "
                f"{INSTALL_HINT}"
            )
    searched = ", ".join(str(d) for d in candidate_dirs(data_dir))
    raise DataNotFoundError(
        f"Fashion-MNIST not found: expected {', '.join(names)} (gzipped or raw) in one of {searched}; {INSTALL_HINT}"
    )


@dataclass
class RawSplits:
    """The dataset as uint8 arrays, exactly as stored: images (N, H, W), labels (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]
    source: str


def _load_pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, expect_ndim=3)
    labels = read_idx(labels_path, expect_ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise IDXError(f"{images_path}, {labels_path}: expected uint8 images and labels, got {images.dtype}, {labels.dtype}")
    if len(images) != len(labels):
        raise IDXError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= num_classes:
        raise IDXError(f"{labels_path}: label {int(labels.max())} out of range 0..{num_classes - 1}")
    return images, labels


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> RawSplits:
    """Load the four Fashion-MNIST files (see :func:`find_fashion_mnist` for where from)."""
    paths = find_fashion_mnist(data_dir)
    n = len(FASHION_MNIST_CLASSES)
    tr_x, tr_y = _load_pair(paths["train_images"], paths["train_labels"], n)
    te_x, te_y = _load_pair(paths["test_images"], paths["test_labels"], n)
    if tr_x.shape[1:] != te_x.shape[1:]:
        raise IDXError(f"train images are {tr_x.shape[1:]} but test images are {te_x.shape[1:]}")
    return RawSplits(tr_x, tr_y, te_x, te_y, FASHION_MNIST_CLASSES, str(paths["train_images"].parent))


def download_fashion_mnist(root: str | os.PathLike | None = None, *, timeout: float = 60.0, mirror: str | None = None,
                           progress: bool | None = None) -> Path:
    """Download the four files into ``root`` (default: the user cache), checking each file's md5, from the
    first of :data:`MIRRORS` that works (or only from ``mirror`` / ``$CNNLAB_MIRROR`` when set).

    Files already present with the right checksum are kept; a cut download resumes
    (:func:`cnnlab.data.download.download`); each file is renamed into place only when complete and right.
    """
    root = Path(root) if root is not None else cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    for name, md5 in FASHION_MNIST_FILES.values():
        target = root / name
        if target.is_file() and file_digest(target, "md5") == md5:
            continue
        errors = []
        own = mirror if mirror is not None else os.environ.get(MIRROR_ENV, "").strip()
        for base in ((own,) if own else MIRRORS):
            try:
                download(base.rstrip("/") + "/" + name, target, md5=md5, timeout=timeout, progress=progress)
                break
            except DownloadError as e:
                errors.append(str(e))
        else:
            raise DataNotFoundError(f"could not download {name}: " + "; ".join(errors))
    return root
