"""The datasets cnnlab downloads (``cnnlab data download NAME``, then ``--dataset NAME``): where each comes from,
its checksum, and how its archive becomes a folder cnnlab reads.

| name | what | from | read as |
|---|---|---|---|
| ``cifar10`` | CIFAR-10, 60,000 32x32 colour images, 10 classes | Toronto's **binary** version (never the pickled one) | :func:`read_cifar10` |
| ``dogs-vs-cats`` | Kaggle's 25,000 labelled photos (``train/cat.123.jpg``) | a login: the user's file, ``--from FILE`` | class folders ``cat/``, ``dog/`` |
| ``oxford-pets`` | the Oxford-IIIT Pet dataset's 7,349 photos as cat vs dog (its species) | torchvision's URLs | ``train/``, ``test/`` (its own split) |
| ``imagenette`` | 10 easy ImageNet classes, 13,394 photos (320 px) | torchvision's URLs | ``train/``, ``test/`` (its val set) |

Each is downloaded by :func:`cnnlab.data.download.download` (resumed, checksummed, a progress bar), unpacked
by :func:`~cnnlab.data.download.extract_archive` (no traversal, no links, bounded sizes) into a temporary
sibling of its folder, laid out, marked complete (:data:`MARKER`) and renamed into place: a folder is there
whole or not at all. The folder is ``~/.cache/cnnlab/NAME`` (``$XDG_CACHE_HOME``), or ``--data-dir``. The
archives are removed once unpacked.

Loading lives in :mod:`cnnlab.data.datasets`; the image datasets are image folders
(:func:`cnnlab.data.folder.load_folder`), so their transform, memory limit and disk cache are a folder's.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cnnlab._io import atomic_write_json, file_digest
from cnnlab._limits import format_bytes
from cnnlab.data.download import (ArchiveError, DownloadError, download, extract_archive, mirrored, part_path,
                                  url_name)
from cnnlab.data.fashion_mnist import DataNotFoundError
from cnnlab.data.splits import DatasetError

__all__ = ["Remote", "Entry", "CATALOG", "MARKER", "CIFAR10_CLASSES", "cache_root", "dataset_root", "find_dataset",
           "download_dataset", "dataset_status", "read_cifar10"]

#: The file that marks a dataset folder complete (written last, before the folder is renamed into place).
MARKER = "cnnlab-dataset.json"

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
_CIFAR_MAX_FILE = 10_000 * _CIFAR_RECORD  # each published file holds 10,000 records


@dataclass(frozen=True)
class Remote:
    """One file to download: its URL, its published md5 (None: none is published), its rough size (for messages)."""

    url: str
    md5: str | None
    size: int

    @property
    def name(self) -> str:
        return url_name(self.url)


@dataclass(frozen=True)
class Entry:
    """A downloadable dataset: its files, how they are laid out, and what ``--dataset NAME`` reads."""

    name: str
    title: str
    files: tuple[Remote, ...]
    layout: Callable[[list[Path], Path], dict]  # (unpacked archives, new folder) -> facts for the marker
    kind: str  # "cifar" (binary records) or "folder" (an image folder)
    image_size: int | None = None  # a folder's default --image-size
    login: str | None = None  # how to get the file where a login is needed (no URL then)
    licence: str = ""


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/cnnlab`` (``~/.cache/cnnlab``): where each dataset has its folder."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnnlab"


def dataset_root(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of dataset ``name``: ``data_dir`` itself when given, else ``~/.cache/cnnlab/NAME``."""
    return Path(data_dir).expanduser().absolute() if data_dir is not None else cache_root() / name


def _read_marker(root: Path) -> dict | None:
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _entry(name: str) -> Entry:
    if name not in CATALOG:
        raise DatasetError(f"unknown dataset {name!r} to download; valid: fashion-mnist, {', '.join(CATALOG)}")
    return CATALOG[name]


def _how_to_get(e: Entry, root: Path) -> str:
    if e.login:
        return e.login
    size = format_bytes(sum(f.size for f in e.files))
    return (f"run `cnnlab data download {e.name}` on a machine with a network (about {size} from "
            f"{', '.join(f.url for f in e.files)}), or copy a folder it made to {root}")


def find_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The complete folder of dataset ``name``; :class:`DataNotFoundError` saying how to get it otherwise."""
    e = _entry(name)
    root = dataset_root(name, data_dir)
    if _read_marker(root) is None:
        where = "is not" if not root.exists() else "is not complete"
        raise DataNotFoundError(f"dataset {name} {where} in {root}; {_how_to_get(e, root)}"
                                + ("" if data_dir is not None else " (or point --data-dir at its folder)"))
    return root


def dataset_status(name: str, data_dir: str | os.PathLike | None = None) -> dict:
    """What is on disk for ``name``: ``present``, ``path``, and the marker's facts (image counts, classes)."""
    root = dataset_root(name, data_dir)
    marker = _read_marker(root)
    partial = [str(part_path(root.parent / f".{root.name}.downloads" / f.name)) for f in _entry(name).files
               if part_path(root.parent / f".{root.name}.downloads" / f.name).is_file()]
    return {"name": name, "title": CATALOG[name].title, "path": str(root), "present": marker is not None,
            **({"images": marker.get("images"), "classes": marker.get("classes")} if marker else {}),
            **({"partial_downloads": partial} if partial else {})}


def download_dataset(name: str, *, data_dir: str | os.PathLike | None = None, source: str | os.PathLike | None = None,
                     mirror: str | None = None, progress: bool | None = None,
                     log: Callable[[str], None] = print) -> Path:
    """Download (or take ``source``, a local copy of the file) dataset ``name``, check, unpack and lay it out
    in :func:`dataset_root`; return the folder. A complete folder is left as it is.

    Raises :class:`DownloadError` (network, checksum; a cut download resumes on the next call),
    :class:`ArchiveError` (a refused archive), :class:`DataNotFoundError` (a dataset behind a login without
    ``source``), :class:`DatasetError` (a folder in the way, a file that is not this dataset)."""
    e = _entry(name)
    root = dataset_root(name, data_dir)
    if _read_marker(root) is not None:
        log(f"{name}: already in {root}")
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DatasetError(f"{root} exists and is not a complete {name} folder made by cnnlab; remove it or choose "
                           "another --data-dir")
    if source is None and e.login and not (mirror or os.environ.get("CNNLAB_MIRROR", "").strip()):
        raise DataNotFoundError(f"{name}: {e.login}")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.downloads"
    with open(root.parent / f".{root.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DatasetError(f"another cnnlab is downloading {name} into {root} now; wait for it") from None
        for stale in root.parent.glob(f".{root.name}.*.partial"):  # a killed unpacking's leftovers (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        archives = []
        if source is not None and len(e.files) > 1 and not Path(source).is_dir():
            raise DatasetError(f"--from {source}: {name} has {len(e.files)} files "
                               f"({', '.join(f.name for f in e.files)}); give the folder holding them")
        for f in e.files:
            if source is not None:
                archives.append(_local_source(Path(source), f))
            else:
                url = mirrored(f.url, mirror)
                log(f"{name}: {url_name(url)} (about {format_bytes(f.size)}) from {url}")
                try:
                    archives.append(download(url, staging / f.name, md5=f.md5, progress=progress, log=log))
                except DownloadError as err:
                    if staging.is_dir() and not any(staging.iterdir()):
                        staging.rmdir()
                    by_hand = (f.name if len(e.files) == 1 else
                               f"a folder holding {', '.join(x.name for x in e.files)}")
                    raise DownloadError(f"{err}; or download it elsewhere and give it with --from "
                                        f"{by_hand}") from None
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".partial", dir=root.parent))
        ok = False
        try:
            unpacked = []
            for i, archive in enumerate(archives):
                log(f"{name}: unpacking {archive.name}")
                unpacked.append(extract_archive(archive, tmp / "raw" / str(i)))
            out = tmp / "data"
            out.mkdir()
            facts = e.layout(unpacked, out)
            atomic_write_json(out / MARKER, {"name": name, "title": e.title, **facts,
                                             "files": [{"url": f.url, "md5": f.md5} for f in e.files],
                                             **({"source": str(Path(source).absolute())} if source else {})})
            if root.is_dir():
                root.rmdir()  # empty (checked above)
            os.rename(out, root)
            ok = True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if not ok:  # a downloaded file without a published checksum that could not be used: fetch it anew
                for f, archive in zip(e.files, archives):
                    if f.md5 is None and archive.parent == staging:
                        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    images = ", ".join(f"{v:,} {k}" for k, v in facts.get("images", {}).items())
    log(f"{name}: {images} images in {root}")
    return root


def _local_source(source: Path, f: Remote) -> Path:
    """A file the user fetched themselves (``--from``: the file, or a folder holding it by its published name),
    checked against the published md5 where there is one."""
    if source.is_dir():
        source = source / f.name
    if not source.is_file():
        raise DatasetError(f"--from {source}: no such file (give {f.name}, or a folder holding it)")
    if f.md5 is not None:
        got = file_digest(source, "md5")
        if got != f.md5:
            raise DownloadError(f"--from {source}: md5 {got} does not match {f.name}'s published {f.md5}")
    return source


# ---------------------------------------------------------------- layouts


def _move_into(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for p in files:
        os.replace(p, folder / p.name)


def _find(unpacked: Path, name: str) -> Path:
    """The one folder named ``name`` under ``unpacked`` (at any depth); a :class:`DatasetError` otherwise."""
    found = sorted(p for p in unpacked.rglob(name) if p.is_dir())
    if not found:
        raise DatasetError(f"the archive holds no {name}/ folder: it is not the expected dataset")
    return found[0]


def _cifar10_layout(unpacked: list[Path], out: Path) -> dict:
    src = _find(unpacked[0], "cifar-10-batches-bin")
    counts = {}
    for split, names in _CIFAR_FILES.items():
        n = 0
        for fname in names:
            p = src / fname
            if not p.is_file():
                raise DatasetError(f"the CIFAR-10 archive lacks cifar-10-batches-bin/{fname}")
            n += _cifar_records(p)
            os.replace(p, out / fname)
        counts[split] = n
    meta = src / "batches.meta.txt"
    if meta.is_file():
        os.replace(meta, out / meta.name)
    return {"images": counts, "classes": list(_cifar_classes(out))}


def _cifar_records(path: Path) -> int:
    size = path.stat().st_size
    if size % _CIFAR_RECORD or size > _CIFAR_MAX_FILE or size == 0:
        raise DatasetError(f"{path}: {size} bytes is not a CIFAR-10 binary batch (1 to 10,000 records of "
                           f"{_CIFAR_RECORD} bytes)")
    return size // _CIFAR_RECORD


def _cifar_classes(root: Path) -> tuple[str, ...]:
    try:
        names = tuple(ln.strip() for ln in (root / "batches.meta.txt").read_text("ascii").splitlines() if ln.strip())
    except (OSError, UnicodeDecodeError):
        return CIFAR10_CLASSES
    return names if len(names) == 10 and all(n.isprintable() and len(n) < 40 for n in names) else CIFAR10_CLASSES


def read_cifar10(root: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """CIFAR-10's binary version in ``root``: (train images uint8 (N, 3, 32, 32), train labels uint8, test images,
    test labels, class names). Each file's size is checked (whole records, at most 10,000) before it is read;
    a label outside 0..9 is a :class:`DatasetError` naming the file. Nothing is unpickled."""
    root = Path(root)
    arrays = []
    for split, names in _CIFAR_FILES.items():
        xs, ys = [], []
        for fname in names:
            p = root / fname
            if not p.is_file():
                raise DataNotFoundError(f"{root}: missing {fname} of CIFAR-10 (run `cnnlab data download cifar10`)")
            _cifar_records(p)
            rec = np.fromfile(p, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
            if int(rec[:, 0].max()) > 9:
                raise DatasetError(f"{p}: label {int(rec[:, 0].max())} out of range 0..9; not a CIFAR-10 batch")
            ys.append(rec[:, 0].copy())
            xs.append(rec[:, 1:].reshape(-1, 3, 32, 32))
        arrays += [np.concatenate(xs), np.concatenate(ys)]
    return (*arrays, _cifar_classes(root))


_KAGGLE_NAME = re.compile(r"^(cat|dog)\.\d+\.(jpe?g|png)$", re.IGNORECASE)


def _dogs_vs_cats_layout(unpacked: list[Path], out: Path) -> dict:
    """Kaggle's ``train/cat.123.jpg`` files (from its ``train.zip``, or from the competition's zip holding
    ``train.zip``) into ``cat/`` and ``dog/``, labelled by their names; its unlabelled ``test1/`` is left out."""
    base = unpacked[0]
    for inner in sorted(base.rglob("train.zip")):  # the competition's zip holds train.zip and test1.zip
        extract_archive(inner, inner.with_suffix(".unpacked"))
    by_class: dict[str, list[Path]] = {"cat": [], "dog": []}
    for p in sorted(base.rglob("*")):
        m = _KAGGLE_NAME.match(p.name)
        if m and p.is_file() and "test1" not in p.parts:
            by_class[m.group(1).lower()].append(p)
    empty = [c for c, files in by_class.items() if not files]
    if empty:
        raise DatasetError(f"the file holds no {' and no '.join(empty)} images named like Kaggle's dogs-vs-cats "
                           "(train/cat.0.jpg, train/dog.0.jpg): it is not Kaggle's train.zip or dogs-vs-cats.zip")
    for c, files in by_class.items():
        _move_into(files, out / c)
    return {"images": {c: len(f) for c, f in by_class.items()}, "classes": ["cat", "dog"],
            "layout": "cat/, dog/ (validation and test carved from them, seeded)"}


def _oxford_pets_layout(unpacked: list[Path], out: Path) -> dict:
    """The photos of Oxford-IIIT Pet's own trainval and test lists, as ``train/`` and ``test/`` of ``cat/`` and
    ``dog/`` (the lists' SPECIES column: 1 cat, 2 dog; the 37 breeds are not kept)."""
    images = _find(unpacked[0], "images")
    annotations = _find(unpacked[1], "annotations")
    counts = {}
    for split, listing in (("train", "trainval.txt"), ("test", "test.txt")):
        path = annotations / listing
        if not path.is_file():
            raise DatasetError(f"the Oxford-IIIT Pet annotations lack {listing}")
        by_class: dict[str, list[Path]] = {"cat": [], "dog": []}
        for line in path.read_text("utf-8", errors="replace").splitlines():
            fields = line.split()
            if len(fields) < 3 or line.startswith("#") or fields[2] not in ("1", "2"):
                continue
            image = images / f"{fields[0]}.jpg"
            if "/" not in fields[0] and image.is_file():
                by_class["cat" if fields[2] == "1" else "dog"].append(image)
        for c, files in by_class.items():
            if not files:
                raise DatasetError(f"the Oxford-IIIT Pet {listing} names no {c} image found in images/")
            _move_into(files, out / split / c)
        counts[split] = sum(len(f) for f in by_class.values())
    return {"images": counts, "classes": ["cat", "dog"],
            "layout": "train/ (its trainval list; validation carved from it, seeded), test/ (its test list)"}


#: Imagenette's WordNet ids and the names cnnlab uses for them (torchvision's ``Imagenette._WNID_TO_CLASS``'s first).
IMAGENETTE_CLASSES = {"n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
                      "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
                      "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
                      "n03888257": "parachute"}


def _imagenette_layout(unpacked: list[Path], out: Path) -> dict:
    """Imagenette's ``train/`` and ``val/`` (its held-out set, cnnlab's test split) with each WordNet-id folder
    renamed to the class's name."""
    train = _find(unpacked[0], "train")
    counts = {}
    for split, folder in (("train", train), ("test", train.parent / "val")):
        n = 0
        for wnid, cls in IMAGENETTE_CLASSES.items():
            src = folder / wnid
            if not src.is_dir():
                raise DatasetError(f"the Imagenette archive lacks {folder.name}/{wnid} ({cls})")
            files = [p for p in src.iterdir() if p.is_file()]
            _move_into(files, out / split / cls)
            n += len(files)
        counts[split] = n
    return {"images": counts, "classes": sorted(IMAGENETTE_CLASSES.values()),
            "layout": "train/ (validation carved from it, seeded), test/ (Imagenette's val/)"}


#: The datasets ``cnnlab data download`` knows. URLs and md5s: CIFAR-10's binary version as Toronto publishes
#: it; Oxford-IIIT Pet and Imagenette from torchvision's ``OxfordIIITPet._RESOURCES`` and
#: ``Imagenette._ARCHIVES["320px"]`` (a test checks them against torchvision's).
CATALOG: dict[str, Entry] = {
    "cifar10": Entry(
        "cifar10", "CIFAR-10 (binary version), 50,000 training and 10,000 test 32x32 colour images, 10 classes",
        (Remote("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530",
                170_000_000),),
        _cifar10_layout, "cifar"),
    "dogs-vs-cats": Entry(
        "dogs-vs-cats", "Kaggle's Dogs vs. Cats, 25,000 labelled photos (the lecture's dataset)",
        (Remote("https://www.kaggle.com/c/dogs-vs-cats/data/train.zip", None, 570_000_000),),
        _dogs_vs_cats_layout, "folder", image_size=150,
        login="Kaggle needs a login: sign in at https://www.kaggle.com/c/dogs-vs-cats/data, accept the rules, "
              "download train.zip (or the whole dogs-vs-cats.zip; `kaggle competitions download -c dogs-vs-cats` "
              "does the same), then run `cnnlab data download dogs-vs-cats --from FILE`; oxford-pets is the "
              "no-login alternative"),
    "oxford-pets": Entry(
        "oxford-pets", "Oxford-IIIT Pet as cats vs dogs (its species), 3,680 training and 3,669 test photos",
        (Remote("https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c",
                792_000_000),
         Remote("https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
                "95a8c909bbe2e81eed6a22bccdf3f68f", 19_000_000)),
        _oxford_pets_layout, "folder", image_size=150),
    "imagenette": Entry(
        "imagenette", "Imagenette (320 px), 10 ImageNet classes: 9,469 training and 3,925 test photos",
        (Remote("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz", "3df6f0d01a2c9592104656642f5e78a3",
                342_000_000),),
        _imagenette_layout, "folder", image_size=224),
}
