"""``cnnlab data info|download [NAME]``: what datasets are on disk, and fetching one (``data.fashion_mnist``,
``data.catalog``); ``info`` also lists the generated ``known-answer`` dataset (``data.known_answer``)."""

from __future__ import annotations

import argparse
import json

from cnnlab.cli._types import BadInput

__all__ = ["add_parser", "run"]

_NAMES = ("fashion-mnist", "cifar10", "dogs-vs-cats", "oxford-pets", "imagenette")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="what datasets are here, and downloading one",
                              description="info: where each dataset was found (or what is missing); download NAME: "
                                          "fetch, check and unpack it into ~/.cache/cnnlab/NAME (or --data-dir). "
                                          f"Names: {', '.join(_NAMES)}.")
    p.add_argument("action", choices=("info", "download"))
    p.add_argument("name", nargs="?", metavar="NAME",
                   help=f"{', '.join(_NAMES)} (download: default fashion-mnist; info: default all)")
    p.add_argument("--data-dir", help="the dataset's folder: where to look (info) or to unpack to (download)")
    p.add_argument("--mirror", metavar="URL",
                   help="fetch every file by its name from this base URL instead ($CNNLAB_MIRROR)")
    p.add_argument("--from", dest="source", metavar="FILE",
                   help="a copy of the file you downloaded yourself (dogs-vs-cats: Kaggle's train.zip or "
                        "dogs-vs-cats.zip; a dataset of several files: the folder holding them)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")
    p.add_argument("--json", action="store_true", help="info as JSON")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    if a.name is not None and a.name not in _NAMES:
        raise BadInput(f"unknown dataset {a.name!r}; valid: {', '.join(_NAMES)}")
    if a.action == "download":
        return _download(a)
    return _info(a)


def _download(a: argparse.Namespace) -> int:
    name = a.name or "fashion-mnist"
    if name == "fashion-mnist":
        from cnnlab.data import download_fashion_mnist

        if a.source is not None:
            raise BadInput("--from applies to the datasets behind a login (dogs-vs-cats) or fetched by hand; for "
                           "Fashion-MNIST point --data-dir at the folder holding its files")
        root = download_fashion_mnist(a.data_dir, mirror=a.mirror, progress=a.progress)
        print(f"Fashion-MNIST in {root}")
        return 0
    from cnnlab.data.catalog import download_dataset

    root = download_dataset(name, data_dir=a.data_dir, source=a.source, mirror=a.mirror, progress=a.progress)
    print(f"{name} in {root}; train on it with --dataset {name}"
          + (f" --data-dir {a.data_dir}" if a.data_dir else ""))
    return 0


def _fashion_mnist_info(data_dir) -> dict:
    from cnnlab.data import DataNotFoundError, find_fashion_mnist, load_fashion_mnist

    try:
        paths = find_fashion_mnist(data_dir)
    except DataNotFoundError as e:
        return {"name": "fashion-mnist", "present": False, "missing": str(e)}
    raw = load_fashion_mnist(data_dir)
    return {"name": "fashion-mnist", "present": True, "path": str(paths["train_images"].parent),
            "images": {"train": len(raw.train_labels), "test": len(raw.test_labels)},
            "classes": list(raw.classes), "size": [int(raw.train_images.shape[1]), int(raw.train_images.shape[2])]}


def _info(a: argparse.Namespace) -> int:
    from cnnlab.data.catalog import dataset_status

    if a.mirror is not None or a.source is not None:
        raise BadInput("--mirror and --from apply to download")
    names = [a.name] if a.name else list(_NAMES)
    if a.data_dir is not None and len(names) > 1:
        raise BadInput("--data-dir is one dataset's folder: give the dataset's NAME with it")
    rows = [_fashion_mnist_info(a.data_dir) if n == "fashion-mnist" else dataset_status(n, a.data_dir) for n in names]
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not a.name:
        from cnnlab.data.known_answer import known_answer_summary

        print(known_answer_summary())  # generated: there whatever the files are
    for r in rows:
        if r["present"]:
            images = " and ".join(f"{v:,} {k}" for k, v in (r.get("images") or {}).items())
            classes = r.get("classes") or []
            size = f" of {r['size'][0]}x{r['size'][1]}" if "size" in r else ""
            print(f"{r['name']} in {r['path']}: {images} images{size}, {len(classes)} classes: {', '.join(classes)}")
        elif r["name"] == "fashion-mnist":
            print(f"fashion-mnist: missing; {r['missing']}")
        else:
            partial = f" (a download was cut: {', '.join(r['partial_downloads'])}; run it again to resume)" \
                if r.get("partial_downloads") else ""
            print(f"{r['name']}: not downloaded (cnnlab data download {r['name']}, into {r['path']}){partial}")
    missing = [r["name"] for r in rows if not r["present"]]
    if a.name and missing:  # asked about one dataset that is not there: say so with the exit code too
        return 2
    return 0
