"""``cnnlab viz RUN``: visualisation methods on a run's model (``viz.report.visualize_run``), the
faithfulness table."""

from __future__ import annotations

import argparse
import json

from cnnlab.cli._types import _non_negative_int, _positive_int

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("viz", help="see inside a trained run: filters, feature maps, Grad-CAM, occlusion, ...",
                              description="Run visualisation methods on a run's model and write PNG files and "
                                          "one offline index.html (default RUN/viz).")
    p.add_argument("run")
    p.add_argument("--methods", default="all",
                   help="all, or a comma list of filters, feature-maps, maximize, gradcam, occlusion, saliency, "
                        "mistakes")
    p.add_argument("--layer", help="the conv layer for Grad-CAM and maximisation (default: the last conv layer)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--images", type=_positive_int, default=8, help="the first N test images (8)")
    g.add_argument("--image", nargs="+", metavar="FILE", help="image files instead of test images")
    p.add_argument("--target", type=_non_negative_int, help="class to explain (default: each image's prediction)")
    p.add_argument("--out", help="output folder (default RUN/viz)")
    p.add_argument("--faithfulness", action="store_true",
                   help="deletion/insertion curves per attribution method; prints the table")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from cnnlab.viz.report import visualize_run

    result = visualize_run(a.run, a.out, methods=a.methods, layer=a.layer, n_images=a.images, image_files=a.image,
                           target=a.target, data_dir=a.data_dir, faithfulness=a.faithfulness,
                           log=(lambda s: None) if a.json else print)
    if a.json:
        print(json.dumps(result))
        return 0
    if "faithfulness" in result:
        print("\nfaithfulness (deletion: lower is better; insertion: higher is better)")
        w = max(len(k) for k in result["faithfulness"])
        print(f"{'method':<{w}}  deletion AUC  insertion AUC")
        for k, v in result["faithfulness"].items():
            print(f"{k:<{w}}  {v['deletion_auc']:12.3f}  {v['insertion_auc']:13.3f}")
    print(f"open {result['index']}")
    return 0
