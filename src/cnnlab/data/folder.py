"""Image folders as datasets (``--dataset folder:PATH``): a user's own PNG, JPEG, BMP, ... files of any
size, RGB or grayscale, decoded once into uint8 (N, C, H, W) splits like Fashion-MNIST's, so the
batch loader, the training engine, evaluation and the visualisations take them unchanged.

Layouts. Classes are the sorted names of the class folders (hidden files and folders are ignored;
images may sit in nested folders of their class, and links are followed):

* ``PATH/<class>/<image>``: class folders alone, the dogs-vs-cats layout;
* ``PATH/train/<class>/...`` with optional ``PATH/val/`` (or ``valid/``, ``validation/``) and
  ``PATH/test/``, each holding the same class folders (a class missing from, or extra in, one of
  them is an error).

Links. Each directory is entered once and each file (by its device and inode: its real path, or a hard
link to it) is kept once across the whole dataset, at its first path in the sorted walk -- train/
before val/ before test/, classes in sorted order -- so no file lands in two classes or two splits.
The dataset's own folders (the root, the split and the class folders) are never entered through a
link from inside a class (``cat/up -> ..`` is not followed), and loops end where they meet a folder
already read; a link to a folder outside the dataset is followed, once. The files and folders left
out are counted in one warning each.

A split without a folder is carved from the training images, class by class (stratified), by a
permutation seeded with ``seed``: the validation split takes ``val_size`` and the test split
``test_size``, each a fraction of every class (a float in [0, 1); 0.1 by default) or a total count
(an int, shared among the classes in proportion to their sizes, largest remainders first). Class
folders alone thus split 80/10/10. Every split is then shuffled with the same generator, and
``subset`` keeps the first N training images (only those are decoded).

The transform (:class:`ImageTransform`, recorded in the run so ``cnnlab predict`` applies it to new
images) is torchvision's evaluation transform: resize so that the image covers ``image_size``
(the shorter side, for a square size; bilinear, antialiased) and crop the centre; grayscale or RGB.

Decoding happens once, up front, in a pool of worker processes (one per available CPU and per 256
files, at most :data:`MAX_WORKERS` = 8; small folders decode in the calling process). When the
decoded images fit in :data:`DEFAULT_MEMORY_LIMIT` bytes (2 GiB; the ``memory_limit`` argument or
``$CNNLAB_FOLDER_MEMORY``, e.g. ``512M``) they are held in memory; larger datasets are decoded once
into a uint8 file under ``~/.cache/cnnlab/folders`` (keyed by every file's path, size and
modification time, its class, the split and the transform) and memory-mapped, so batches stream
from disk and the next load with the same settings (the size limits among them) decodes nothing.

Files are opened through :func:`cnnlab.data.images.open_image`: one over 256 MiB
(``$CNNLAB_MAX_IMAGE_BYTES``) or, by its header, over 64 megapixels (``$CNNLAB_MAX_IMAGE_PIXELS``)
is refused before it is decoded. A file that cannot be decoded, or is over a limit, is skipped with
a warning naming it, and a count at the end; training never meets it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from cnnlab._io import atomic_path, atomic_write_json
from cnnlab._limits import size_from_env
from cnnlab.data.splits import FOLDER_PREFIX, DataSplits, DatasetError, channel_stats
from cnnlab.data.images import (ImageDecodeError, ImageTooLargeError, max_image_bytes, max_image_pixels, open_image,
                                read_image)

__all__ = [
    "IMAGE_EXTENSIONS", "DEFAULT_IMAGE_SIZE", "DEFAULT_SPLIT_FRACTION", "DEFAULT_MEMORY_LIMIT", "MEMORY_LIMIT_ENV",
    "MAX_WORKERS", "FILES_PER_WORKER", "DatasetWarning", "ImageDecodeError", "ImageTooLargeError", "ImageTransform",
    "load_folder", "folder_cache_dir",
]

#: The file types read (torchvision's ``ImageFolder`` list), matched case-insensitively; other files are ignored.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: Output height and width when ``image_size`` is None.
DEFAULT_IMAGE_SIZE = 64
#: The validation and test fractions carved from the training images where a split has no folder.
DEFAULT_SPLIT_FRACTION = 0.1
#: Decoded datasets up to this many bytes are held in memory; larger ones go to the disk cache.
DEFAULT_MEMORY_LIMIT = 2 * 1024**3
MEMORY_LIMIT_ENV = "CNNLAB_FOLDER_MEMORY"
#: Decoding workers: one per available CPU and per FILES_PER_WORKER files, at most MAX_WORKERS. Starting
#: a pool costs 0.1 s where processes fork and 2.5-3 s where they start afresh (spawn, forkserver: each
#: imports torch), measured on a 2-core machine; 256 photos take about 0.5 s to decode.
MAX_WORKERS = 8
FILES_PER_WORKER = 256

_SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_CACHE_VERSION = 1


class DatasetWarning(UserWarning):
    """Something in an image folder was skipped (an unreadable or too large file, a file or folder reached twice)."""


@dataclass(frozen=True)
class ImageTransform:
    """How an image file becomes uint8 (C, H, W): the same for training images and for ``predict``.

    1. decode with Pillow (:func:`cnnlab.data.images.read_image`, which first refuses a file over
       its byte or pixel limit); a JPEG at the smallest DCT scale (1/2, 1/4, 1/8) that keeps both
       sides at least twice the larger output side, as Pillow's ``thumbnail`` does (a 500x375 photo
       to 64x64 decodes at 1/2: 250x188);
    2. apply the EXIF orientation;
    3. palette images to RGB(A); an alpha channel (or a transparent colour) composited over white;
       16-bit, 32-bit integer and float images scaled to 8 bits by their nominal range;
    4. grayscale (Pillow's ITU-R 601 luma) or RGB;
    5. resize so that the image covers ``size`` (H, W) -- for a square size, its shorter side to
       the size -- with bilinear antialiased interpolation, and crop the centre: torchvision's
       ``Resize`` + ``CenterCrop``, done as one resampling of the centred box (``ImageOps.fit``).
       With ``resize`` (a pretrained model's preprocessing, e.g. 256 for a 224 crop): the shorter
       side to ``resize`` first (bilinear, antialiased), then the centre ``size`` cropped, as
       torchvision's ``ImageClassification`` transform does.
    """

    size: tuple[int, int]
    grayscale: bool
    resize: int | None = None

    RESIZE = "cover-then-center-crop"
    INTERPOLATION = "bilinear"
    ALPHA = "over-white"
    JPEG_DRAFT = 2  # the decoded JPEG keeps at least this multiple of the output size

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def to_dict(self) -> dict[str, Any]:
        d = {"resize": self.RESIZE, "interpolation": self.INTERPOLATION, "image_size": list(self.size),
             "grayscale": self.grayscale, "alpha": self.ALPHA, "jpeg_draft": self.JPEG_DRAFT}
        return d if self.resize is None else d | {"resize_size": self.resize}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ImageTransform":
        """The transform a run recorded; ``ValueError`` if it is not the one this cnnlab applies."""
        mine = cls((1, 1), False).to_dict()
        differ = [k for k in ("resize", "interpolation", "alpha", "jpeg_draft") if d.get(k) != mine[k]]
        if differ:
            theirs = ", ".join(f"{k} {d.get(k)!r}" for k in differ)
            ours = ", ".join(f"{k} {mine[k]!r}" for k in differ)
            raise ValueError(f"the run's image transform ({theirs}) is not the one this cnnlab applies ({ours})")
        h, w = d["image_size"]
        resize = d.get("resize_size")
        if resize is not None and (isinstance(resize, bool) or not isinstance(resize, int) or resize < 1):
            raise ValueError(f"the run's image transform has resize_size {resize!r}, not a positive number of pixels")
        return cls((int(h), int(w)), bool(d["grayscale"]), resize)

    def __call__(self, path: str | os.PathLike) -> np.ndarray:
        """Decode ``path`` to a contiguous uint8 (C, H, W) array (steps 1-4: :func:`cnnlab.data.images.read_image`,
        within its size limits); :class:`ImageDecodeError` (:class:`ImageTooLargeError` over a limit) if it cannot."""
        h, w = self.size
        side = self.JPEG_DRAFT * max(h, w, self.resize or 0)
        im = read_image(path, self.grayscale, draft=(side, side))
        if self.resize is not None:  # torchvision's Resize(shorter side) + CenterCrop
            scale = self.resize / min(im.size)
            rw, rh = max(w, round(im.size[0] * scale)), max(h, round(im.size[1] * scale))
            im = im.resize((rw, rh), Image.Resampling.BILINEAR)
            top, left = int(round((rh - h) / 2.0)), int(round((rw - w) / 2.0))
            im = im.crop((left, top, left + w, top + h))
        else:
            im = ImageOps.fit(im, (w, h), Image.Resampling.BILINEAR)
        a = np.array(im, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on a read-only view
        return np.ascontiguousarray(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))


def _is_grayscale(path: str) -> bool | None:
    """Whether the file's header says grayscale (None: unreadable or over a limit; the decoding pass names it)."""
    try:
        with open_image(path) as im:
            if im.mode in _GRAY_MODES:
                return True
            if im.mode in ("P", "PA"):
                palette = np.asarray(im.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
                return bool(len(palette)) and bool((palette == palette[:, :1]).all())
            return False
    except ImageDecodeError:
        return None


def _try_decode(transform: ImageTransform, path: str) -> np.ndarray | str:
    try:
        return transform(path)
    except ImageDecodeError as e:
        return str(e)


# ---------------------------------------------------------------- finding the files


@dataclass(frozen=True)
class _File:
    path: str
    size: int
    mtime_ns: int


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())


def _dir_key(path: str | os.PathLike) -> tuple[int, int] | None:
    """The identity of the directory ``path`` leads to, links followed (None: it cannot be read)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Walk:
    """Finds the image files under a dataset's folders, links followed, with each directory entered once and
    each file (by its device and inode: its real path, or a hard link to it) kept once across the dataset.

    The dataset's own folders (the root, the split and the class folders) are reserved up front, so a link
    inside a class back to them (``cat/up -> ..``) is not followed; a link to a folder outside the dataset
    is followed, once. What is not kept is counted: :attr:`duplicates` (files reached again) and
    :attr:`revisits` (directories reached again, the loops among them).
    """

    def __init__(self) -> None:
        self.entered: set[tuple[int, int]] = set()
        self.kept: set[tuple[int, int]] = set()
        self.duplicates = 0
        self.revisits: list[str] = []

    def reserve(self, folder: Path) -> None:
        key = _dir_key(folder)
        if key is not None:
            self.entered.add(key)

    def images(self, folder: Path) -> list[_File]:
        """The image files under ``folder`` (entered even if reserved) not met before, in sorted order: a
        folder's own files, then its subfolders' depth first (as a sorted ``os.walk``)."""
        found: list[_File] = []
        stack, top = [str(folder)], True
        while stack:
            here = stack.pop()
            if not top:
                key = _dir_key(here)
                if key is None:
                    continue
                if key in self.entered:
                    self.revisits.append(here)
                    continue
                self.entered.add(key)
            top = False
            try:
                with os.scandir(here) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:  # unreadable: skipped, as os.walk does
                continue
            subfolders = []
            for e in entries:
                if e.name.startswith("."):
                    continue
                try:
                    is_dir = e.is_dir()  # links followed
                except OSError:
                    is_dir = False
                if is_dir:
                    subfolders.append(e.path)
                    continue
                if not e.name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                try:
                    st = os.stat(e.path)
                except OSError:  # a dangling link: decoding names it
                    found.append(_File(e.path, -1, -1))
                    continue
                key = (st.st_dev, st.st_ino)
                if key in self.kept:
                    self.duplicates += 1
                    continue
                self.kept.add(key)
                found.append(_File(e.path, st.st_size, st.st_mtime_ns))
            stack.extend(reversed(subfolders))
        return found


def _class_names(folder: Path, classes: Sequence[str] | None) -> tuple[str, ...]:
    """The classes of a class-per-subfolder ``folder``: its subfolders, checked against ``classes`` if given."""
    found = _subfolders(folder)
    if classes is None:
        if not found:
            loose = len(_Walk().images(folder))
            where = f" ({loose} images lie directly in it)" if loose else ""
            raise DatasetError(f"{folder}: no class folders{where}; put each class's images in a subfolder named "
                               "after the class")
        if len(found) < 2:
            raise DatasetError(f"{folder}: only one class folder ({found[0]}); a classifier needs at least two")
        return tuple(found)
    if list(classes) != found:
        missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
        raise DatasetError(f"{folder}: its class folders differ from the training classes ("
                           + "; ".join(p for p in (missing and f"missing {', '.join(missing)}",
                                                   extra and f"extra {', '.join(extra)}") if p) + ")")
    return tuple(classes)


def _class_files(folder: Path, classes: Sequence[str], walk: _Walk) -> list[list[_File]]:
    """The files of each class folder of ``folder`` not already found by ``walk``; an error if one is left empty."""
    files, dropped = [], []
    for c in classes:
        before = walk.duplicates
        files.append(walk.images(folder / c))
        dropped.append(walk.duplicates - before)
    if not any(files) and not any(dropped):
        raise DatasetError(f"{folder}: no images in any class folder ({', '.join(IMAGE_EXTENSIONS)})")
    for c, f, d in zip(classes, files, dropped):
        if not f and d:
            raise DatasetError(f"{folder / c}: all its {d} images were already found through another class or split "
                               "folder (the same files, reached by links); give each class its own images")
        if not f:
            raise DatasetError(f"{folder / c}: an empty class folder (no {', '.join(IMAGE_EXTENSIONS)} files)")
    return files


def _allocate(size: int | float, counts: Sequence[int], flag: str) -> list[int]:
    """Per-class shares of a split of ``size`` (a fraction of each class, or a total count)."""
    n = sum(counts)
    if isinstance(size, float):
        if not 0 <= size < 1:
            raise DatasetError(f"{flag} {size!r}: a fraction must be in [0, 1) (or give a count of images)")
        total = math.floor(size * n + 0.5)  # half up: 0.1 of 65 is 7
    else:
        if not 0 <= size < n:
            raise DatasetError(f"{flag} {size} must be between 0 and {n - 1} (the training folders hold {n} images)")
        total = size
    shares = [total * c // n for c in counts]
    by_remainder = sorted(range(len(counts)), key=lambda i: (-(total * counts[i] % n), i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


@dataclass
class _Plan:
    """What to decode, in order: the training, validation and test files."""

    root: Path
    classes: tuple[str, ...]
    files: list[_File]
    labels: np.ndarray
    counts: tuple[int, int, int]
    info: dict[str, Any]
    duplicates: int = 0  # files reached by more than one path, kept once
    revisits: tuple[str, ...] = ()  # folders reached again through links, not entered


def _plan(root: Path, *, val_size: int | float | None, test_size: int | float | None, subset: int | None,
          seed: int) -> _Plan:
    if not root.exists():
        raise DatasetError(f"folder:{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"folder:{root}: not a folder")
    names = _subfolders(root)
    splits = {s: [n for n in names if n in aliases] for s, aliases in _SPLIT_FOLDERS.items()}
    layout: dict[str, str] = {}
    walk = _Walk()
    if splits["train"]:
        for s, found in splits.items():
            if len(found) > 1:
                raise DatasetError(f"{root}: both {' and '.join(found)}/ look like the {s} split; keep one")
        other = [n for n in names if not any(n in a for a in _SPLIT_FOLDERS.values())]
        if other:
            raise DatasetError(f"{root}: split folders ({', '.join(n for f in splits.values() for n in f)}) beside "
                               f"other folders ({', '.join(other)}); use one layout")
        folders = {s: root / found[0] for s, found in splits.items() if found}
        classes = _class_names(folders["train"], None)
        for s in ("val", "test"):
            if s in folders:
                _class_names(folders[s], classes)
        layout.update({s: f"{f.name}/" for s, f in folders.items()})
    else:
        folders = {"train": root}
        classes = _class_names(root, None)
        layout["train"] = "./"
    for f in (root, *folders.values(), *(f / c for f in folders.values() for c in classes)):
        walk.reserve(f)  # before any walk, so that no link leads into another class or split
    train = _class_files(folders["train"], classes, walk)
    held = {s: _class_files(folders[s], classes, walk) for s in ("val", "test") if s in folders}
    for s, size, flag in (("val", val_size, "--val-size"), ("test", test_size, "test_size")):
        if s in held and size is not None:
            raise DatasetError(f"{flag} {size!r}: {root} has a {layout[s]} folder for the {s} split; "
                               f"drop {flag}")

    rng = np.random.default_rng(seed)
    counts = [len(f) for f in train]
    carve = {s: _allocate(DEFAULT_SPLIT_FRACTION if size is None else size, counts, flag)
             for s, size, flag in (("val", val_size, "--val-size"), ("test", test_size, "test_size")) if s not in held}
    by_split: dict[str, list[tuple[_File, int]]] = {"train": [], "val": [], "test": []}
    for label, files in enumerate(train):
        order = [files[i] for i in rng.permutation(len(files))]
        start = 0
        for s, shares in carve.items():
            by_split[s] += [(f, label) for f in order[start: start + shares[label]]]
            start += shares[label]
        if start >= len(order):
            raise DatasetError(f"{root / layout['train'] / classes[label]}: its {len(order)} images leave none for "
                               f"training after the validation and test splits; lower --val-size")
        by_split["train"] += [(f, label) for f in order[start:]]
    for s, per_class in held.items():
        by_split[s] = [(f, label) for label, files in enumerate(per_class) for f in files]
    for s in by_split:
        by_split[s] = [by_split[s][i] for i in rng.permutation(len(by_split[s]))]
    if subset is not None:
        if subset <= 0:
            raise DatasetError(f"--subset must be positive, got {subset}")
        by_split["train"] = by_split["train"][:subset]
    ordered = by_split["train"] + by_split["val"] + by_split["test"]
    for s in carve:
        layout[s] = f"{layout['train']} (seeded, stratified)"
    info = {"layout": layout, "val_size": None if "val" in held else (DEFAULT_SPLIT_FRACTION if val_size is None
                                                                          else val_size),
            "test_size": None if "test" in held else (DEFAULT_SPLIT_FRACTION if test_size is None else test_size),
            "subset": subset, "split_seed": seed}
    return _Plan(root, classes, [f for f, _ in ordered], np.array([y for _, y in ordered], dtype=np.int64),
                 tuple(len(by_split[s]) for s in ("train", "val", "test")), info, walk.duplicates,
                 tuple(walk.revisits))


# ---------------------------------------------------------------- decoding


def folder_cache_dir() -> Path:
    """Where decoded datasets larger than the memory limit are kept: ``$XDG_CACHE_HOME/cnnlab/folders``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnlab" / "folders"


def _memory_limit(value: int | None) -> int:
    if value is not None:
        return int(value)
    return size_from_env(MEMORY_LIMIT_ENV, DEFAULT_MEMORY_LIMIT, DatasetError)


def _workers(value: int | None, files: int) -> int:
    if value is not None:
        return max(1, min(int(value), files))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(MAX_WORKERS, cpus, files // FILES_PER_WORKER))


_Map = Callable[[Callable, Sequence], Iterable]


@contextmanager
def _mapper(workers: int) -> Iterator[_Map]:
    """An ordered ``map`` over ``workers`` processes (in this process for one worker)."""
    if workers <= 1:
        yield map
        return
    with ProcessPoolExecutor(workers) as pool:
        yield lambda fn, items: pool.map(fn, items, chunksize=max(1, min(32, len(items) // (4 * workers))))


def _decode_into(out: np.ndarray, plan: _Plan, transform: ImageTransform, pmap: _Map) -> tuple[list[int], list[str]]:
    """Decode the plan's files into consecutive rows of ``out``; (indices decoded, messages of the skipped)."""
    kept, skipped = [], []
    for i, result in enumerate(pmap(partial(_try_decode, transform), [f.path for f in plan.files])):
        if isinstance(result, str):
            skipped.append(result)
        else:
            out[len(kept)] = result
            kept.append(i)
    return kept, skipped


def _cache_key(plan: _Plan, size: tuple[int, int], grayscale: bool | None) -> str:
    h = hashlib.sha256(json.dumps({"version": _CACHE_VERSION, "size": list(size), "grayscale": grayscale,
                                   "transform": ImageTransform(size, False).to_dict(),
                                   "limits": [max_image_pixels(), max_image_bytes()]}).encode())
    for f, y in zip(plan.files, plan.labels.tolist()):
        h.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\0{y}\n".encode())
    return h.hexdigest()[:32]


def _read_cache(data: Path, meta: Path) -> tuple[np.ndarray, dict] | None:
    try:
        m = json.loads(meta.read_text())
        shape = tuple(int(v) for v in m["shape"])
        if data.stat().st_size != math.prod(shape):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return np.memmap(data, dtype=np.uint8, mode="c", shape=shape), m  # "c": writable views, the file untouched


def _normalize_size(image_size: int | Sequence[int] | None) -> tuple[int, int]:
    if image_size is None:
        return DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE
    sizes = list(image_size) if isinstance(image_size, (list, tuple)) else [image_size]
    if not 1 <= len(sizes) <= 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes):
        raise DatasetError(f"--image-size must be N or H,W positive integers, got {image_size!r}")
    return sizes[0], sizes[-1]


def load_folder(
    path: str | os.PathLike,
    *,
    image_size: int | Sequence[int] | None = None,
    grayscale: bool | None = None,
    val_size: int | float | None = None,
    test_size: int | float | None = None,
    subset: int | None = None,
    seed: int = 0,
    memory_limit: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> DataSplits:
    """Load the image folder at ``path`` as :class:`DataSplits` (see the module docstring for layouts).

    Args:
        image_size: output H (square) or (H, W); default :data:`DEFAULT_IMAGE_SIZE`.
        grayscale: one channel or three; None: one if every image's file is grayscale.
        val_size, test_size: where the split has no folder, the share carved from the training
            images: a fraction of each class (float) or a total count (int); default 0.1. Giving one
            for a split that has a folder is an error.
        subset: decode and train on the first N (shuffled) training images.
        seed: the permutation of the split and of each split's order.
        memory_limit: the most decoded bytes held in memory; default ``$CNNLAB_FOLDER_MEMORY`` or 2 GiB.
        cache_dir: the disk cache for larger datasets (default :func:`folder_cache_dir`).
        workers: decoding processes (default: one per available CPU and per :data:`FILES_PER_WORKER`
            files, at most :data:`MAX_WORKERS`; one decodes in this process).
        log: receives progress lines and the warnings (default: warnings through :mod:`warnings`).

    Raises:
        DatasetError: an empty or missing path, fewer than two classes, an empty class folder (or one
            whose files all were found already through another class or split), no readable
            training image for a class, a bad split size.
        ImageLimitError: ``$CNNLAB_MAX_IMAGE_PIXELS`` or ``$CNNLAB_MAX_IMAGE_BYTES`` is not a valid limit.
    """
    def warn(msg: str, stacklevel: int = 4) -> None:
        if log is None:
            warnings.warn(msg, DatasetWarning, stacklevel=stacklevel)  # pointing at load_folder's caller
        else:
            log(f"warning: {msg}")

    def report(skipped: list[str]) -> None:
        """A warning per unreadable (or too large) file, then the count; an error if nothing was readable."""
        for msg in skipped:
            warn(f"skipped {msg}")
        if skipped:
            warn(f"skipped {len(skipped)} of {len(plan.files)} files in {root} (unreadable, corrupt or too large)")
        if len(skipped) == len(plan.files):
            raise DatasetError(f"folder:{root}: none of its {len(plan.files)} images could be read")

    say = log or (lambda s: None)
    if isinstance(path, str) and not path.strip():
        raise DatasetError("folder: needs a path: folder:PATH, a folder of class folders (or of train/, val/, test/ "
                           "holding them); use folder:. for the current folder")
    root = Path(path).expanduser().absolute()
    size = _normalize_size(image_size)
    max_image_pixels(), max_image_bytes()  # a bad $CNNLAB_MAX_IMAGE_PIXELS or _BYTES is an error now, not per file
    plan = _plan(root, val_size=val_size, test_size=test_size, subset=subset, seed=seed)
    if plan.duplicates:
        warn(f"{root}: kept once {plan.duplicates} image files reached by more than one path (links): each at its "
             "first path, in sorted order, train before val before test", stacklevel=3)
    if plan.revisits:
        more = f" and {len(plan.revisits) - 1} more" if len(plan.revisits) > 1 else ""
        warn(f"{root}: did not enter {len(plan.revisits)} folders already read (reached again through links, or "
             f"looping back): {plan.revisits[0]}{more}", stacklevel=3)
    limit, n_workers = _memory_limit(memory_limit), _workers(workers, len(plan.files))
    cache = Path(cache_dir) if cache_dir is not None else folder_cache_dir()
    key = _cache_key(plan, size, grayscale)
    data_file, meta_file = cache / f"{key}.u8", cache / f"{key}.json"
    cached = _read_cache(data_file, meta_file)
    t0 = time.perf_counter()
    if cached is not None:
        images, meta = cached
        kept, skipped, transform = meta["kept"], meta["skipped"], ImageTransform(size, meta["grayscale"])
        storage = f"cache {data_file}"
        say(f"{root}: {len(kept):,} decoded images from the cache {data_file}")
        report(skipped)
    else:
        with _mapper(n_workers) as pmap:
            gray = grayscale
            if gray is None:
                probes = list(pmap(_is_grayscale, [f.path for f in plan.files]))
                gray = all(p is not False for p in probes) and any(probes)
            transform = ImageTransform(size, gray)
            shape = (len(plan.files), transform.channels, *size)
            in_memory = math.prod(shape) <= limit
            storage = "memory" if in_memory else f"cache {data_file}"
            say(f"{root}: decoding {len(plan.files):,} images to {transform.channels}x{size[0]}x{size[1]} "
                + (f"in {n_workers} processes" if n_workers > 1 else "in this process") + f" into {storage}")
            if in_memory:
                images = np.empty(shape, np.uint8)
                kept, skipped = _decode_into(images, plan, transform, pmap)
                report(skipped)
                images = images[: len(kept)]
            else:
                with atomic_path(data_file) as tmp:
                    out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
                    kept, skipped = _decode_into(out, plan, transform, pmap)
                    out.flush()
                    del out
                    report(skipped)  # before the file is kept: nothing readable leaves no cache
                    os.truncate(tmp, len(kept) * math.prod(shape[1:]))
                atomic_write_json(meta_file, {"root": str(root), "shape": [len(kept), *shape[1:]], "kept": kept,
                                              "skipped": skipped, "grayscale": gray,
                                              "transform": transform.to_dict()})
                images = _read_cache(data_file, meta_file)[0]

    kept_idx = np.asarray(kept, dtype=np.int64)
    labels = torch.from_numpy(plan.labels[kept_idx])
    ends = np.cumsum(plan.counts)
    n_train, n_val = (int(v) for v in np.searchsorted(kept_idx, ends[:2]))
    x = torch.from_numpy(images)
    train_y = labels[:n_train]
    unseen = sorted(set(range(len(plan.classes))) - set(train_y.tolist()))
    if unseen:
        raise DatasetError(f"{root}: no readable training image for class {', '.join(plan.classes[i] for i in unseen)}")
    train_x = x[:n_train]
    mean, std = channel_stats(train_x)
    say(f"{root}: {len(kept):,} images ({n_train:,} train, {n_val - n_train:,} val, {len(kept) - n_val:,} test), "
        f"{len(plan.classes)} classes, {time.perf_counter() - t0:.1f}s")
    return DataSplits(
        name=FOLDER_PREFIX + str(root),
        classes=plan.classes,
        train_x=train_x,
        train_y=train_y,
        val_x=x[n_train:n_val],
        val_y=labels[n_train:n_val],
        test_x=x[n_val:],
        test_y=labels[n_val:],
        mean=mean,
        std=std,
        source=str(root),
        info={**plan.info, "transform": transform.to_dict(), "files": len(plan.files), "skipped": skipped,
              "storage": storage},
    )
