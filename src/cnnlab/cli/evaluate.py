"""``cnnlab eval RUN`` (a run's test metrics from its saved weights) and ``cnnlab predict RUN IMAGE...``
(top-k classes of image files)."""

from __future__ import annotations

import argparse
import json
import sys

from cnnlab.cli._types import _positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    from cnnlab.train.config import TTA_METHODS

    p = subparsers.add_parser("eval", help="recompute a run's test metrics from its saved weights")
    p.add_argument("run")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--tta", choices=TTA_METHODS,
                   help="also report the accuracy with this test-time augmentation (flip: each image and its mirror "
                        "averaged), labelled, beside the plain one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)

    p = subparsers.add_parser("predict", help="classify image files with a trained run (top-k)")
    p.add_argument("run")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=_positive_int, default=3)
    p.add_argument("--invert", choices=("auto", "yes", "no"), default=None,
                   help="Fashion-MNIST runs: invert light-background photos to the dataset's dark background (auto); "
                        "image-folder runs apply their recorded transform")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    return _predict(a) if a.command == "predict" else _eval(a)


def _eval(a: argparse.Namespace) -> int:
    from cnnlab.runs import load_run
    from cnnlab.train import evaluate_run, resolve_device

    dev = resolve_device(a.device)
    run = load_run(a.run, map_location=str(dev))
    log = lambda s: print(s, file=sys.stderr)  # noqa: E731
    result = {"run": a.run} | evaluate_run(run, data_dir=a.data_dir, device=dev, tta=a.tta, log=log)
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    tta = result.get("tta")
    print(f"{a.run}: test accuracy {100 * result['test_accuracy']:.2f}%  loss {result['test_loss']:.4f}  "
          f"({result['test_images']} images)")
    if tta:
        print(f"{a.run}: test accuracy {tta['label']} {100 * tta['test_accuracy']:.2f}%  loss {tta['test_loss']:.4f}")
    if tta:
        print(f"  {'class':<12} {'plain':>7}  {tta['label']}")
    for c, acc in result["per_class_accuracy"].items():
        print(f"  {c:<12} {100 * acc:6.2f}%" + (f"  {100 * tta['per_class_accuracy'][c]:6.2f}%" if tta else ""))
    return 0


def _predict(a: argparse.Namespace) -> int:
    from cnnlab.predict import predict_files
    from cnnlab.runs import load_run

    results = predict_files(load_run(a.run), a.images, top=a.top, invert=a.invert)
    if a.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        tops = "  ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"])
        print(f"{r['image']}: {tops}")
    return 0
