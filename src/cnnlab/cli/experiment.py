"""``cnnlab experiment NAME``: one of the lecture's experiments (``experiments.run_fmnist``,
``experiments.run_transfer``) and its table."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cnnlab.cli._types import BadInput, _non_negative_int, _positive_int, _positive_ints

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("experiment", help="run one of the lecture's experiments")
    p.add_argument("name", choices=("fmnist", "transfer"),
                   help="fmnist: the lecture's CNN vs an MLP on Fashion-MNIST; transfer: a backbone trained on 8 "
                        "Fashion-MNIST classes transferred to the other 2 with few images, against training from "
                        "scratch")
    p.add_argument("--out", help="folder for the runs and the comparison (runs/experiment-NAME)")
    p.add_argument("--overwrite", action="store_true", help="train again even if finished runs exist")
    p.add_argument("--epochs", type=_positive_int, help="fmnist: override both recipes' epochs; transfer: the "
                                                         "backbone's (3)")
    p.add_argument("--shots", type=_positive_ints, metavar="K,K,...",
                   help="transfer: labelled images per class of the two new classes (10,50,200)")
    p.add_argument("--seeds", type=_positive_int, help="transfer: samples of the labelled images per size (3)")
    p.add_argument("--steps", type=_positive_int, help="transfer: optimizer steps of each few-image run (200)")
    p.add_argument("--subset", type=_positive_int, help="train on the first N training images (quick look)")
    p.add_argument("--val-size", type=_non_negative_int, help="validation images carved from training (5000)")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from cnnlab.experiments import format_fmnist, format_transfer, run_fmnist, run_transfer

    log = (lambda s: print(s, file=sys.stderr)) if a.json else print
    out = a.out or f"runs/experiment-{a.name}"
    if a.name == "transfer":
        backbone = {k: getattr(a, k) for k in ("epochs", "subset", "val_size") if getattr(a, k) is not None}
        common = {"device": a.device, **({"data_dir": a.data_dir} if a.data_dir is not None else {})}
        options = {k: getattr(a, k) for k in ("shots", "seeds", "steps") if getattr(a, k) is not None}
        result = run_transfer(out, overwrite=a.overwrite, backbone_overrides=backbone, overrides=common, log=log,
                              progress=a.progress, **options)
        print(json.dumps(result, indent=2) if a.json else "\n" + format_transfer(result))
        return 0
    given = [f"--{k}" for k in ("shots", "seeds", "steps") if getattr(a, k) is not None]
    if given:
        raise BadInput(f"{', '.join(given)} apply to the transfer experiment, not {a.name}")
    overrides: dict[str, Any] = {"device": a.device}
    for key in ("epochs", "subset", "val_size", "data_dir"):
        if getattr(a, key) is not None:
            overrides[key] = getattr(a, key)
    result = run_fmnist(out, overwrite=a.overwrite, overrides=overrides, log=log, progress=a.progress)
    print(json.dumps(result, indent=2) if a.json else "\n" + format_fmnist(result))
    return 0
