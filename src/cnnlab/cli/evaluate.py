"""``cnnlab eval RUN`` (a run's test metrics from its saved weights) and ``cnnlab predict RUN IMAGE...``
(top-k classes of image files)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from cnnlab.cli._types import BadInput, _positive_int, add_pretrained_arg, pretrained_face

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

    p = subparsers.add_parser("predict", help="classify image files with a trained run, or a pretrained tv:NAME (top-k)",
                              description="RUN is a run directory, or tv:NAME --pretrained [WEIGHTS]: torchvision's "
                                          "model with its published weights (ImageNet's categories, the weights' own "
                                          "preprocessing).")
    p.add_argument("run", metavar="RUN|tv:NAME")
    p.add_argument("images", nargs="*", metavar="IMAGE")
    add_pretrained_arg(p)
    p.set_defaults(trailing="images")  # IMAGE... may also follow --pretrained WEIGHTS (cnnlab.cli._parse)
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


#: a weights name (IMAGENET1K_V1, DEFAULT, ResNet18_Weights.IMAGENET1K_V1), as opposed to an image file
_WEIGHTS_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Z0-9_]+)?")


def _predict(a: argparse.Namespace) -> int:
    from cnnlab.predict import predict_files, predict_pretrained

    if a.pretrained is not None and (not _WEIGHTS_NAME.fullmatch(a.pretrained) or os.path.exists(a.pretrained)):
        a.images, a.pretrained = [a.pretrained, *a.images], "DEFAULT"  # `--pretrained photo.jpg`: an image, DEFAULT
    if not a.images:
        raise BadInput("give one or more IMAGE files to classify")
    if a.run.startswith("tv:"):
        if a.pretrained is None:
            raise BadInput(f"{a.run} has random weights without --pretrained [WEIGHTS] (torchvision's published "
                           "weights); its predictions would mean nothing")
        if a.invert is not None:
            raise BadInput("--invert applies to runs trained on Fashion-MNIST; a pretrained model uses its weights' "
                           "preprocessing")
        results = predict_pretrained(a.run, a.images, weights=a.pretrained, top=a.top)
    else:
        pretrained_face(a)  # a run directory: --pretrained is refused as everywhere else
        from cnnlab.runs import load_run

        results = predict_files(load_run(a.run), a.images, top=a.top, invert=a.invert)
    if a.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        tops = "  ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"])
        print(f"{r['image']}: {tops}")
    return 0
