"""``cnnlab compare MODEL...`` (``compare.compare_models``: one recipe, params, MACs, latency, accuracy) and
``cnnlab compare --layers`` (``compare.compare_layers``)."""

from __future__ import annotations

import argparse
import json
import sys

from cnnlab.cli._types import BadInput, _non_negative_int, _positive_float, _positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare", help="train models with one recipe; compare parameters, MACs, CPU latency, accuracy",
        description="Train each MODEL with one recipe (into OUT/MODEL; finished runs are reused) and write "
                    "OUT/compare.json, compare.md and compare.png: parameters, MACs, CPU latency at batch 1 "
                    "and 256, training time per epoch, test accuracy. With --layers, compare single layers "
                    "(the lecture's 16->32 channel 3x3 conv on 64x64) instead.",
        epilog="example: cnnlab compare fmnist-cnn gap-cnn --epochs 2 --subset 5000;  cnnlab compare --layers")
    _add_compare_args(p)
    p.set_defaults(func=run)


def _add_compare_args(p: argparse.ArgumentParser) -> None:
    from cnnlab.train.config import OPTIMIZERS, TrainConfig

    p.add_argument("models", nargs="*", metavar="MODEL", help="registered models (`cnnlab models`)")
    p.add_argument("--layers", action="store_true", help="compare single layers instead of models")
    r = p.add_argument_group("the recipe, one for every model (default: cnnlab's TrainConfig)")
    r.add_argument("--epochs", type=_positive_int, help=f"({TrainConfig().epochs}; with --subset for a quick look)")
    r.add_argument("--subset", type=_positive_int, help="train on the first N (seeded) training images")
    r.add_argument("--val-size", type=_non_negative_int, help="validation images carved from training (5000)")
    r.add_argument("--batch-size", type=_positive_int)
    r.add_argument("--lr", type=_positive_float, help="peak learning rate (default per optimizer)")
    r.add_argument("--optimizer", choices=OPTIMIZERS)
    r.add_argument("--seed", type=int)
    r.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None)
    r.add_argument("--data-dir")
    r.add_argument("--device", help="training device: auto, cpu, cuda, cuda:N (latency is always CPU)")
    m = p.add_argument_group("measuring")
    m.add_argument("--threads", type=_positive_int, default=2, help="CPU threads for training and latency (2)")
    m.add_argument("--repeats", type=_positive_int,
                   help="timed passes per latency (default: adaptive, at least 5, about a second)")
    m.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="memory format for latency (default: as the run trained; layers: channels-last)")
    lay = p.add_argument_group("--layers")
    lay.add_argument("--in-channels", type=_positive_int, help="input channels (16)")
    lay.add_argument("--out-channels", type=_positive_int, help="output channels (32)")
    lay.add_argument("--size", type=_positive_int, help="input height and width (64)")
    lay.add_argument("--batch", type=_positive_int, help="the larger latency batch (32)")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="folder for the runs and the comparison (default runs/compare; --layers: "
                                 "nothing written unless given)")
    o.add_argument("--overwrite", action="store_true", help="train again even if finished runs exist")
    o.add_argument("--json", action="store_true", help="print the rows as one JSON list, nothing else on stdout")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)


#: The recipe flags that go to ``compare_models`` as ``overrides`` of its TrainConfig (``--epochs`` and
#: ``--subset`` are parameters of their own).
_COMPARE_OVERRIDES = ("val_size", "batch_size", "lr", "optimizer", "seed", "augment", "data_dir", "device")
#: Every recipe flag: none of them applies to ``--layers``.
_COMPARE_RECIPE = ("epochs", "subset", *_COMPARE_OVERRIDES)
_COMPARE_LAYERS = ("in_channels", "out_channels", "size", "batch")


def run(a: argparse.Namespace) -> int:
    from cnnlab.compare import CompareError, compare_layers, compare_models, format_compare, format_layers

    flag = lambda k: "--" + k.replace("_", "-")  # noqa: E731
    log = (lambda s: print(s, file=sys.stderr)) if a.json else print
    try:
        if a.layers:
            if a.models:
                raise BadInput(f"--layers compares single layers; drop the model names ({' '.join(a.models)})")
            given = [flag(k) for k in (*_COMPARE_RECIPE, "overwrite", "progress") if getattr(a, k) not in (None, False)]
            if given:
                raise BadInput(f"{', '.join(given)} apply to training; --layers trains nothing")
            kwargs = {k: getattr(a, k) for k in _COMPARE_LAYERS if getattr(a, k) is not None}
            rows = compare_layers(**kwargs, threads=a.threads, repeats=a.repeats, channels_last=a.channels_last,
                                  out=a.out or None, log=lambda s: print(s, file=sys.stderr))
            print(json.dumps(rows, indent=2) if a.json else format_layers(rows))
            return 0
        if not a.models:
            from cnnlab.models import list_models

            raise BadInput(f"give one or more MODELs to compare (registered: {', '.join(list_models())}), "
                           "or --layers")
        given = [flag(k) for k in _COMPARE_LAYERS if getattr(a, k) is not None]
        if given:
            raise BadInput(f"{', '.join(given)} apply to --layers only")
        overrides = {k: getattr(a, k) for k in _COMPARE_OVERRIDES if getattr(a, k) is not None}
        result = compare_models(a.models, epochs=a.epochs, subset=a.subset, out=a.out or "runs/compare",
                                overrides=overrides, threads=a.threads, overwrite=a.overwrite,
                                latency_repeats=a.repeats, channels_last=a.channels_last, log=log,
                                progress=a.progress)
    except CompareError as e:
        raise BadInput(str(e)) from None
    print(json.dumps(result["rows"], indent=2) if a.json else "\n" + format_compare(result))
    return 0
