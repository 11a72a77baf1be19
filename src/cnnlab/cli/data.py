"""``cnnlab data info|download``: find or download Fashion-MNIST (``data.fashion_mnist``)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="find or download Fashion-MNIST")
    p.add_argument("action", choices=("info", "download"))
    p.add_argument("--data-dir", help="where to look (info) or to download to (download)")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from cnnlab.data import download_fashion_mnist, find_fashion_mnist, load_fashion_mnist

    if a.action == "download":
        root = download_fashion_mnist(a.data_dir)
        print(f"Fashion-MNIST in {root}")
        return 0
    paths = find_fashion_mnist(a.data_dir)
    raw = load_fashion_mnist(a.data_dir)
    print(f"Fashion-MNIST in {paths['train_images'].parent}: {len(raw.train_labels)} training and "
          f"{len(raw.test_labels)} test images of {raw.train_images.shape[1]}x{raw.train_images.shape[2]}, "
          f"{len(raw.classes)} classes: {', '.join(raw.classes)}")
    return 0
