"""``cnnlab viz RUN``: visualisation methods on a run's model (``viz.report.visualize_run``), the
faithfulness table."""

from __future__ import annotations

import argparse
import json

from cnnlab.cli._types import _positive_int, add_pretrained_arg, pretrained_face

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("viz", help="see inside a trained run: filters, feature maps, Grad-CAM, occlusion, ...",
                              description="Run visualisation methods on a run's model and write PNG files and "
                                          "one offline index.html (default RUN/viz).")
    p.add_argument("run", metavar="RUN|tv:NAME", help="a run directory, or tv:NAME with --pretrained")
    add_pretrained_arg(p)
    p.add_argument("--methods",
                   help="all (the default without --evaluate), or a comma list of filters, feature-maps, maximize, "
                        "gradcam, hirescam, gradcam++, xgradcam, layercam, scorecam, eigencam, ablationcam, "
                        "occlusion, saliency, mistakes")
    p.add_argument("--layer", help="the conv layer for Grad-CAM and maximisation (default: the last conv layer)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--images", type=_positive_int,
                   help="the first N test images (8; 256 with --evaluate, whose figures show the first 8)")
    g.add_argument("--image", nargs="+", metavar="FILE", help="image files instead of test images")
    p.add_argument("--target", metavar="CLASS",
                   help="the class to explain, as an index or a class name of the run ('Ankle boot'; 'boxer' or "
                        "'tiger cat' on an ImageNet model); default: each image's prediction")
    p.add_argument("--out", help="output folder (default RUN/viz)")
    p.add_argument("--faithfulness", action="store_true",
                   help="deletion/insertion curves per attribution method; prints the table")
    p.add_argument("--evaluate", action="store_true",
                   help="which map to trust: every attribution method's faithfulness (deletion/insertion with black "
                        "and blurred replacement, ROAD), randomisation check and time; writes evaluation.json/.md "
                        "and prints the table")
    p.add_argument("--data-dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from cnnlab.viz.report import visualize_run

    pretrained_face(a, needs_images="--image")

    result = visualize_run(a.run, a.out, methods=a.methods, layer=a.layer, n_images=a.images, image_files=a.image,
                           target=a.target, data_dir=a.data_dir, faithfulness=a.faithfulness, evaluate=a.evaluate,
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
    if "evaluation" in result:
        from cnnlab.viz.evaluate import evaluation_text
        from cnnlab.viz.report import verdict_text

        print("\n" + evaluation_text(result["evaluation"]))
        print("\n" + verdict_text(result["evaluation"]))
    for method, blanks in result.get("blank_maps", {}).items():
        print(f"{method}: {len(blanks)} blank map(s); {blanks[0]['why']}")
    print(f"open {result['index']}")
    return 0
