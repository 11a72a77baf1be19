"""The command line: the one place that parses arguments and prints.

Every sub-command is a thin call into a package. Bad input gets one line on stderr naming the bad
value and what would be valid, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from typing import Any, Sequence

from cnnlab.errors import CnnlabError

__all__ = ["main", "build_parser"]

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + error
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _int_at_least(minimum: int):
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(s: str) -> int:
        try:
            v = int(s)
        except ValueError:
            v = None
        if v is None or v < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {s!r}")
        return v

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _positive_ints(s: str) -> list[int]:
    try:
        v = [int(x) for x in s.split(",")]
    except ValueError:
        v = []
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {s!r}")
    return v


def _finite(positive: bool):
    what = "a positive finite number" if positive else "a finite number"

    def parse(s: str) -> float:
        try:
            v = float(s)
        except ValueError:
            v = math.nan
        if not math.isfinite(v) or (positive and not v > 0):
            raise argparse.ArgumentTypeError(f"must be {what}, got {s!r}")
        return v

    return parse


_positive_float = _finite(positive=True)
_finite_float = _finite(positive=False)


def _count_or_fraction(s: str) -> int | float:
    try:
        v: int | float = int(s)
    except ValueError:
        try:
            v = float(s)
        except ValueError:
            v = -1
    if v < 0 or (isinstance(v, float) and not v < 1):
        raise argparse.ArgumentTypeError(f"must be a count (0, 1, 2, ...) or a fraction in [0, 1), got {s!r}")
    return v


def _image_size(s: str) -> int | list[int]:
    try:
        v = [int(p) for p in s.replace("x", ",").split(",")]
    except ValueError:
        v = []
    if not 1 <= len(v) <= 2 or min(v) < 1:
        raise argparse.ArgumentTypeError(f"must be N or H,W (positive integers), got {s!r}")
    return v[0] if len(v) == 1 else v


def _names(s: str) -> list[str]:
    names = [n.strip() for n in s.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"must be comma-separated names, got {s!r}")
    return names


def _freeze(s: str) -> str | int:
    if s in ("features", "none"):
        return s
    if s.isdigit():
        return int(s)
    raise argparse.ArgumentTypeError(f"must be features, none or a number of blocks (0, 1, ...), got {s!r}")


def _key_value(s: str) -> tuple[str, Any]:
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from cnnlab.models.transfer import TRANSFER_HEADS
    from cnnlab.train.config import DEFAULT_LR, DEFAULT_WEIGHT_DECAY, OPTIMIZERS, PRECISIONS, SCHEDULES, TrainConfig

    c = TrainConfig()  # the defaults live in one place
    per_opt = lambda table: ", ".join(f"{k} {v:g}" for k, v in table.items())  # noqa: E731
    d = p.add_argument_group("what to train")
    d.add_argument("--model", help=f"registered model (see `cnnlab models`; {c.model})")
    d.add_argument("--model-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="constructor argument for the model (JSON value), repeatable")
    d.add_argument("--dataset", default=c.dataset,
                   help="fashion-mnist, or folder:PATH (class folders, or train/ [val/] [test/] of class folders)")
    d.add_argument("--data-dir", help="folder with the dataset files (else $CNNLAB_DATA_DIR, Debian's package, the cache)")
    d.add_argument("--subset", type=_positive_int, help="train on the first N (seeded) training images")
    d.add_argument("--val-size", type=_count_or_fraction, default=c.val_size,
                   help="validation split carved from training: a count, or for folder:PATH a fraction of each class "
                        "(fashion-mnist 5000; folders without a val/ folder 0.1, and 0.1 for test without a test/)")
    d.add_argument("--image-size", type=_image_size, metavar="N|H,W",
                   help="folder:PATH: resize to cover NxN (the shorter side to N) or HxW, crop the centre (64)")
    d.add_argument("--grayscale", action=argparse.BooleanOptionalAction, default=None,
                   help="folder:PATH: one channel or three (default: grayscale only if every image is)")
    d.add_argument("--classes", type=_names, metavar="A,B,...", help="keep only these classes (names, in this order)")
    d.add_argument("--per-class", type=_positive_int, metavar="N", help="at most N (seeded) training images per class")
    t = p.add_argument_group("transfer learning: the source's layers under a new head")
    t.add_argument("--from", dest="source", metavar="RUN|tv:NAME",
                   help="a trained run directory, or a torchvision model (with --weights)")
    t.add_argument("--weights", metavar="PATH",
                   help="tv:NAME's pretrained weights (.safetensors, or .pth read with weights_only); nothing is "
                        "downloaded")
    t.add_argument("--head", choices=TRANSFER_HEADS,
                   help="gap: global average pooling + linear (cnnlab models' default); last: the source's last "
                        "layer replaced (torchvision models' only choice)")
    t.add_argument("--freeze", type=_freeze, metavar="features|none|N",
                   help=f"features: train the new head only; none: fine-tune everything; N: freeze the first N blocks "
                        f"of the trunk ({c.freeze})")
    t.add_argument("--backbone-lr-mult", type=_positive_float, metavar="X",
                   help=f"unfrozen backbone layers learn at lr * X ({c.backbone_lr_mult:g})")
    t.add_argument("--extract-features", metavar="OUT.npz",
                   help="instead of training, write the backbone's pooled features of every split: train_features, "
                        "train_labels, val_*, test_*, classes, mean, std, source")
    h = p.add_argument_group("recipe (defaults: cnnlab's recipe for the lecture's CNN)")
    h.add_argument("--epochs", type=_positive_int, default=c.epochs)
    h.add_argument("--batch-size", type=_positive_int, default=c.batch_size)
    h.add_argument("--lr", type=_positive_float, help=f"peak learning rate (default per optimizer: {per_opt(DEFAULT_LR)})")
    h.add_argument("--optimizer", choices=OPTIMIZERS, default=c.optimizer)
    h.add_argument("--momentum", type=_finite_float, default=c.momentum, help="SGD momentum (Nesterov)")
    h.add_argument("--weight-decay", type=_finite_float, help=f"default per optimizer: {per_opt(DEFAULT_WEIGHT_DECAY)}")
    h.add_argument("--schedule", choices=SCHEDULES, default=c.schedule)
    h.add_argument("--warmup", type=_finite_float, default=c.warmup, help="warm-up fraction of training (onecycle, cosine)")
    h.add_argument("--label-smoothing", type=_finite_float, default=c.label_smoothing)
    h.add_argument("--augment", action=argparse.BooleanOptionalAction, default=c.augment,
                   help="augmentation on whole batches (see --hflip, --crop-padding)")
    h.add_argument("--crop-padding", type=_non_negative_int, default=c.crop_padding,
                   help=f"random crop after zero padding by this many pixels ({c.crop_padding}: off)")
    h.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=c.hflip, help="random horizontal flips")
    h.add_argument("--seed", type=int, default=c.seed)
    r = p.add_argument_group("how")
    r.add_argument("--device", default=None, help="auto (CUDA when present), cpu, cuda, cuda:N")
    r.add_argument("--precision", choices=PRECISIONS, default=c.precision,
                   help="auto: bf16 where the hardware has it natively, else fp32")
    r.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=c.channels_last)
    r.add_argument("--compile", action="store_true", help="torch.compile the model")
    r.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm in distributed CUDA training")
    r.add_argument("--checkpoint-interval", type=_positive_float, default=c.checkpoint_interval, metavar="SECONDS",
                   help=f"also checkpoint mid-epoch this often ({c.checkpoint_interval:g})")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="run directory (default runs/<model>-<time>)")
    o.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint (its own settings)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")


def build_parser() -> argparse.ArgumentParser:
    from cnnlab import __version__

    parser = _Parser(prog="cnnlab", description="A lab for convolutional neural networks.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train a model into a run directory")
    _add_train_args(p)

    p = sub.add_parser("eval", help="recompute a run's test metrics from its saved weights")
    p.add_argument("run")
    p.add_argument("--data-dir")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("predict", help="classify image files with a trained run (top-k)")
    p.add_argument("run")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--top", type=_positive_int, default=3)
    p.add_argument("--invert", choices=("auto", "yes", "no"), default=None,
                   help="Fashion-MNIST runs: invert light-background photos to the dataset's dark background (auto); "
                        "image-folder runs apply their recorded transform")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--zoo", action="store_true", help="also list torchvision's models (tv:NAME; names only)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("summary", help="layer table: output shapes, parameters, MACs, receptive fields",
                       description="One row per layer of any registered or torchvision (tv:NAME) model: output "
                                   "shape, parameters, MACs and the receptive field of its units; totals.")
    _add_anatomy_args(p)
    p.add_argument("--keras", action="store_true",
                   help="count BatchNorm running statistics as non-trainable parameters (as the lecture's tables)")
    p.add_argument("--depth", type=_positive_int, help="fold layers below this nesting depth into their block")
    p.add_argument("--dense-equivalent", action="store_true",
                   help="for each conv, the parameters of a dense layer with the same input and output sizes")
    p.add_argument("--all", action="store_true", help="also rows for view/permute/... operations")

    p = sub.add_parser("viz", help="see inside a trained run: filters, feature maps, Grad-CAM, occlusion, ...",
                       description="Run visualisation methods on a run's model and write PNG files and one offline "
                                   "index.html (default RUN/viz).")
    p.add_argument("run")
    p.add_argument("--methods", default="all",
                   help="all, or a comma list of filters, feature-maps, maximize, gradcam, occlusion, saliency, mistakes")
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

    p = sub.add_parser("rf", help="receptive fields layer by layer, and the input region one unit sees",
                       description="The receptive field (size, jump, start; input pixel centres at 0.5) of every "
                                   "layer, and with --layer/--unit the input region one output unit sees.")
    _add_anatomy_args(p)
    p.add_argument("--layer", help="a layer name or its index in the table (e.g. 2)")
    p.add_argument("--unit", help="I,J: the unit's position in that layer's map (default: 0,0)")

    p = sub.add_parser("experiment", help="run one of the lecture's experiments")
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

    _add_compare_args(sub.add_parser(
        "compare", help="train models with one recipe; compare parameters, MACs, CPU latency, accuracy",
        description="Train each MODEL with one recipe (into OUT/MODEL; finished runs are reused) and write "
                    "OUT/compare.json, compare.md and compare.png: parameters, MACs, CPU latency at batch 1 "
                    "and 256, training time per epoch, test accuracy. With --layers, compare single layers "
                    "(the lecture's 16->32 channel 3x3 conv on 64x64) instead.",
        epilog="example: cnnlab compare fmnist-cnn gap-cnn --epochs 2 --subset 5000;  cnnlab compare --layers"))

    _add_compress_args(sub.add_parser(
        "compress", help="prune, quantize, share, binarize a trained run; measure size, speed, accuracy",
        description="Apply one post-training compression method to a trained run and write a new run (OUT, "
                    "default RUN-METHOD-SETTINGS) with compression.json: stored bytes (packed, then xz), test "
                    "accuracy, CPU latency at batch 1 and 256, each beside the float model's. The input run is "
                    "only read. --sweep runs every method over a range of settings and writes a table and a "
                    "Pareto plot.",
        epilog="example: cnnlab compress runs/experiment-fmnist/fmnist-cnn --method prune --sparsity 0.9"))

    p = sub.add_parser("data", help="find or download Fashion-MNIST")
    p.add_argument("action", choices=("info", "download"))
    p.add_argument("--data-dir", help="where to look (info) or to download to (download)")

    _add_conv_args(sub.add_parser(
        "conv", help="convolution arithmetic: a 2D correlation/convolution/pooling step by step, or animated",
        description="Compute a 2D correlation (deep learning's convolution), convolution or pooling on a "
                    "small matrix with cnnlab's reference math: the output, each position's products "
                    "(--steps), or an animation of the kernel sliding (--animate).",
        epilog='example: cnnlab conv --input "3 3 2 1 0; 0 0 1 3 1; 3 1 2 2 3; 2 0 0 2 2; 2 0 0 0 1" '
               '--kernel "0 1 2; 2 2 0; 0 1 2" --steps'))
    return parser


def _add_anatomy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered model (`cnnlab models`) or tv:NAME (`cnnlab models --zoo`)")
    p.add_argument("--input", help="C,H,W (default: the size the model is built for)")
    p.add_argument("--model-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="constructor argument for the model (JSON value), repeatable")
    p.add_argument("--weights", help="a local state dict to load (.safetensors, or .pth read with weights_only)")
    p.add_argument("--json", action="store_true")


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


#: compress flags -> (settings key, the methods that take it)
_COMPRESS_SETTINGS = {"sparsity": ("sparsity", ("prune",)), "scope": ("scope", ("prune",)),
                      "steps": ("steps", ("prune",)), "structured": ("structured", ("prune",)),
                      "bits": ("bits", ("cluster", "inq")), "mode": ("mode", ("binarize",)),
                      "keep_first_last": ("keep_first_last", ("binarize",))}


def _add_compress_args(p: argparse.ArgumentParser) -> None:
    from cnnlab.compress.run import METHODS

    p.add_argument("run", help="a trained run directory (cnnlab train / experiment)")
    p.add_argument("--method", choices=tuple(METHODS),
                   help="; ".join(f"{k}: {v}" for k, (_, v) in METHODS.items()))
    p.add_argument("--sweep", action="store_true", help="every method over a range of settings (table + Pareto plot)")
    s = p.add_argument_group("settings (each for the methods named)")
    s.add_argument("--sparsity", type=_finite_float, help="prune: fraction of weights (or, --structured, of channels) "
                                                  "removed, in (0, 1) (0.9)")
    s.add_argument("--scope", choices=("lamp", "global", "layer"),
                   help="prune: one threshold on LAMP scores (Lee et al. 2021), on plain magnitudes, or the same "
                        "sparsity in each layer (default: lamp; --structured: layer)")
    s.add_argument("--steps", type=_positive_int, help="prune: iterative pruning in N steps, fine-tuning between (1)")
    s.add_argument("--structured", action="store_true", default=None,
                   help="prune: remove whole conv channels (smaller and faster) instead of single weights")
    s.add_argument("--bits", type=int, help="cluster: 2..8 (4); inq: bits per weight (5)")
    s.add_argument("--mode", choices=("bwn", "xnor"), help="binarize: binary weights (bwn) or weights and "
                                                          "activations (xnor) (bwn)")
    s.add_argument("--keep-first-last", action=argparse.BooleanOptionalAction, default=None,
                   help="binarize: keep the first and last layers in float (default: yes, as XNOR-Net)")
    s.add_argument("--finetune-epochs", type=_non_negative_int,
                   help="retraining epochs with the run's recipe (prune 2, cluster 1, inq 1 per step, binarize 3)")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="the new run (default: RUN-METHOD-SETTINGS beside RUN; --sweep: RUN-sweep)")
    o.add_argument("--overwrite", action="store_true", help="replace --out if it exists (--sweep: redo finished rows)")
    o.add_argument("--threads", type=_positive_int, default=2, help="CPU threads for compressing and latency (2)")
    o.add_argument("--subset", type=_positive_int, help="fine-tune and calibrate on N training images (quick look)")
    o.add_argument("--no-latency", dest="latency", action="store_false", help="skip the latency measurement")
    o.add_argument("--json", action="store_true", help="print compression.json (--sweep: the rows), nothing else")


def _add_conv_args(p: argparse.ArgumentParser) -> None:
    from cnnlab.ops import OPS, PADDING_MODES
    from cnnlab.ops.examples import EXAMPLES

    p.add_argument("--example", metavar="NAME",
                   help=f"one of the lecture's worked examples: {', '.join(EXAMPLES)} (or 'list')")
    p.add_argument("--input", help='the matrix: "3 3 2; 0 1 2" (rows by ;), or a .npy / .csv file')
    p.add_argument("--kernel", help="the kernel matrix (same forms); for pooling only its shape is used")
    p.add_argument("--op", choices=OPS, default=None,
                   help="correlate (deep learning's convolution, default), convolve (kernel flipped), max, avg")
    p.add_argument("--size", help="pooling window: K or KH,KW (default: the kernel's shape)")
    p.add_argument("--stride", help="S or SH,SW (default 1; pooling: the window size)")
    p.add_argument("--padding", help="P, PH,PW, TOP,BOTTOM,LEFT,RIGHT, or valid / same / full (default 0)")
    p.add_argument("--dilation", help="D or DH,DW (default 1)")
    p.add_argument("--padding-mode", choices=PADDING_MODES, default=None, help="how to pad (default zeros)")
    p.add_argument("--value", type=_finite_float, default=None, help="the constant for --padding-mode constant")
    p.add_argument("--ceil-mode", action="store_true", help="pooling: round the output size up")
    p.add_argument("--exclude-pad", action="store_true", help="avg pooling: divide by real pixels only")
    p.add_argument("--steps", action="store_true", help="print every position's products and sum")
    p.add_argument("--json", action="store_true", help="print the whole trace as JSON")
    p.add_argument("--animate", metavar="PATH", help="draw the kernel sliding: PATH.gif, or PATH.png frames")
    p.add_argument("--fps", type=_positive_float, default=1.5, help="animation frames per second (1.5)")


#: What `train --resume RUN` takes besides the run: where to train and how to show it (the rest is the run's).
_RESUME_TAKES = {"command", "resume", "device", "progress"}


def _cmd_train(a: argparse.Namespace) -> int:
    from cnnlab.train import TrainConfig, fit

    if a.resume:
        ignored = sorted(a.given - _RESUME_TAKES)
        if ignored:
            flags = ", ".join("--" + k.replace("_", "-") if k != "source" else "--from" for k in ignored)
            raise _BadInput(f"--resume {a.resume} continues with the run's own settings (its config.json); drop "
                            f"{flags} (to train with other settings, start a new run with --out)")
        metrics = fit(resume=a.resume, device=a.device, progress=a.progress)
        run = a.resume
    else:
        transfer_flags = {"--weights": a.weights, "--head": a.head, "--freeze": a.freeze,
                          "--backbone-lr-mult": a.backbone_lr_mult, "--extract-features": a.extract_features}
        given = [flag for flag, v in transfer_flags.items() if v is not None]
        if a.source is None and given:
            raise _BadInput(f"{', '.join(given)} apply to transfer learning; give --from RUN or tv:NAME")
        if a.source is not None and a.model is not None:
            raise _BadInput(f"--model {a.model} and --from {a.source}: the architecture is the source's; drop --model")
        optional = {k: v for k, v in (("freeze", a.freeze), ("backbone_lr_mult", a.backbone_lr_mult)) if v is not None}
        cfg = TrainConfig(
            model=a.model or TrainConfig.model, model_kwargs=dict(a.model_arg), dataset=a.dataset, data_dir=a.data_dir,
            val_size=a.val_size, subset=a.subset, image_size=a.image_size, grayscale=a.grayscale, epochs=a.epochs,
            batch_size=a.batch_size, lr=a.lr,
            optimizer=a.optimizer, momentum=a.momentum, weight_decay=a.weight_decay, schedule=a.schedule,
            warmup=a.warmup, label_smoothing=a.label_smoothing, augment=a.augment, crop_padding=a.crop_padding,
            hflip=a.hflip, seed=a.seed, device=a.device or "auto", precision=a.precision,
            channels_last=a.channels_last, compile=a.compile, sync_bn=a.sync_bn,
            checkpoint_interval=a.checkpoint_interval, classes=a.classes, per_class=a.per_class,
            source=a.source, weights=a.weights, head=a.head, **optional,
        )
        from cnnlab.train.rundir import default_run_dir

        if a.extract_features:
            from cnnlab.train.transfer import extract_features

            r = extract_features(cfg, a.extract_features, overwrite=a.overwrite)
            sizes = ", ".join(f"{k} {v}" for k, v in r["sizes"].items())
            print(f"{r['features']} features per image of {r['source']} ({sizes} images) -> {r['path']}")
            return 0
        source = None if a.source is None else os.path.basename(os.path.normpath(a.source)).replace(":", "-")
        run = a.out or str(default_run_dir(cfg.model if source is None else f"{source}-transfer"))
        metrics = fit(cfg, run, overwrite=a.overwrite, progress=a.progress)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 speaks for all
        print(f"test accuracy {100 * metrics['test_accuracy']:.2f}%  ({metrics['test_images']} images)  "
              f"train {metrics['train_seconds']:.0f}s  {metrics['images_per_s']:.0f} img/s  -> {run}")
    return 0


def _cmd_eval(a: argparse.Namespace) -> int:
    from cnnlab.train import evaluate, load_run, make_eval_loader, resolve_device, resolve_precision

    dev = resolve_device(a.device)
    run = load_run(a.run, map_location=str(dev))
    cfg = run.config
    data = cfg.load_data(data_dir=a.data_dir, log=lambda s: print(s, file=sys.stderr))
    channels_last = cfg.channels_last and any(p.ndim == 4 for p in run.model.parameters())
    if channels_last:
        import torch

        run.model.to(memory_format=torch.channels_last)
    loader = make_eval_loader(data.test_x, data.test_y, run.data, dev, cfg.eval_batch_size, channels_last)
    m = evaluate(run.model, loader, len(run.data["classes"]), resolve_precision(cfg.precision, dev))
    if m["nonfinite_outputs"]:
        from cnnlab.errors import NonFiniteError

        raise NonFiniteError(f"{a.run}: the model's outputs are not finite (NaN or inf) for {m['nonfinite_outputs']} "
                             f"of {m['count']} test images; its weights are broken (a diverged or corrupted run)")
    classes = run.data["classes"]
    result = {"run": a.run, "test_accuracy": m["accuracy"], "test_loss": m["loss"], "test_images": m["count"],
              "per_class_accuracy": dict(zip(classes, m["per_class_accuracy"])),
              "confusion_matrix": m["confusion_matrix"]}
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{a.run}: test accuracy {100 * m['accuracy']:.2f}%  loss {m['loss']:.4f}  ({m['count']} images)")
        for c, acc in result["per_class_accuracy"].items():
            print(f"  {c:<12} {100 * acc:6.2f}%")
    return 0


def _cmd_predict(a: argparse.Namespace) -> int:
    from cnnlab.predict import predict_files
    from cnnlab.train import load_run

    results = predict_files(load_run(a.run), a.images, top=a.top, invert=a.invert)
    if a.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        tops = "  ".join(f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top"])
        print(f"{r['image']}: {tops}")
    return 0


def _cmd_models(a: argparse.Namespace) -> int:
    from cnnlab.models import ZOO_PREFIX, count_parameters, create_model, list_models, model_entrypoint, model_info

    rows = []
    for name in list_models(zoo=a.zoo):
        info = model_info(name)
        doc = (model_entrypoint(name).__doc__ or "").strip().splitlines()
        row = {"name": name, "input_size": list(info.input_size), "num_classes": info.num_classes,
               "description": doc[0] if doc else ""}
        if not name.startswith(ZOO_PREFIX):  # building 80 torchvision models takes a while: names only
            m = create_model(name)
            row |= {"params": count_parameters(m), "trainable_params": count_parameters(m, trainable_only=True)}
        rows.append(row)
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            params = f"{r['params']:>12,}" if "params" in r else " " * 12
            size = "x".join(map(str, r["input_size"]))
            print(f"{r['name']:<{w}}  {params}  {size:>11}  {r['description']}")
    return 0


def _anatomy_model(a: argparse.Namespace):
    """The model and input size for summary/rf. ``--input`` also sets the factory's ``in_channels``
    and ``image_size`` (when it has them and ``--model-arg`` does not), so a model built for 28x28
    can be looked at on 3x32x32."""
    import inspect

    from cnnlab.models import WeightsError, create_model, model_entrypoint, model_info

    info = model_info(a.model)
    size = info.input_size
    kwargs = dict(a.model_arg)
    if a.input is not None:
        try:
            size = tuple(int(v) for v in a.input.replace("x", ",").split(","))
        except ValueError:
            size = ()
        if len(size) not in (2, 3, 4) or min(size) < 1:
            raise _BadInput(f"--input must be C,H,W (or C,L / C,D,H,W) positive integers; got {a.input!r}")
        accepted = inspect.signature(model_entrypoint(a.model)).parameters
        if "in_channels" in accepted:
            kwargs.setdefault("in_channels", size[0])
        if "image_size" in accepted and len(size) == 3:
            kwargs.setdefault("image_size", size[1] if size[1] == size[2] else list(size[1:]))
    try:
        model = create_model(a.model, weights=a.weights, **kwargs)
    except CnnlabError:
        raise
    except (TypeError, ValueError) as e:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise _BadInput(f"cannot build {a.model} with {args or 'its defaults'}: {str(e).splitlines()[0]}") from None
    return model, size


def _cmd_summary(a: argparse.Namespace) -> int:
    from cnnlab.analysis import summarize

    model, size = _anatomy_model(a)
    s = summarize(model, size, keras=a.keras, depth=a.depth, model_name=a.model, include_quiet=a.all)
    if a.json:
        print(json.dumps(s.to_dict()))
    else:
        print(s.table(dense_equivalent=a.dense_equivalent))
    return 0


def _cmd_viz(a: argparse.Namespace) -> int:
    from cnnlab.viz.report import visualize_run

    result = visualize_run(a.run, a.out, a.methods, a.layer, a.images, a.image, a.target, a.data_dir,
                           a.faithfulness, log=(lambda s: None) if a.json else print)
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


def _cmd_rf(a: argparse.Namespace) -> int:
    from cnnlab.analysis import unit_region
    from cnnlab.analysis.summary import summarize

    model, size = _anatomy_model(a)
    s = summarize(model, size, model_name=a.model)
    rows = [r for r in s.rows if r.output_shape is not None]
    table = []
    for i, r in enumerate(rows):
        rf = r.receptive_field_dict()
        table.append({"index": i, "name": r.name, "type": r.type, "map_size": list(r.output_shape[1:]) if
                      len(r.output_shape) > 1 else [], "receptive_field": rf,
                      "note": None if rf else ("every input pixel" + (f": {r.rf.note}" if r.rf and r.rf.note else ""))})
    unit = None
    if a.layer is not None or a.unit is not None:
        key = a.layer if a.layer is not None else table[-1]["name"]
        match = [t for t in table if t["name"] == key or str(t["index"]) == key]
        if not match:
            raise _BadInput(f"unknown layer {key!r}; valid: {', '.join(t['name'] for t in table)} "
                            f"(or an index 0-{len(table) - 1})")
        row = match[0]
        rf = rows[row["index"]].rf
        try:
            pos = tuple(int(v) for v in (a.unit or "0,0").split(","))
        except ValueError:
            pos = ()
        spatial = len(size) - 1
        if len(pos) != spatial:
            raise _BadInput(f"--unit must be {spatial} comma-separated integers (a position in the map); got {a.unit!r}")
        if rf is None or rf.is_global or not rf.axes:
            raise _BadInput(f"layer {row['name']!r} has no spatial map: each of its units sees every input pixel")
        axes = rf.ordered()
        if len(axes) != spatial or any(not 0 <= p < m for p, m in zip(pos, row["map_size"][-spatial:])):
            raise _BadInput(f"--unit {a.unit} is outside layer {row['name']!r}'s map "
                            f"{'x'.join(map(str, row['map_size'][-spatial:]))}")
        regions = [unit_region(af, p, extent) for af, p, extent in zip(axes, pos, size[1:])]
        unit = {"layer": row["name"], "index": row["index"], "unit": list(pos), "regions": regions}
    if a.json:
        print(json.dumps({"model": a.model, "input": list(size), "layers": table, "unit": unit}))
        return 0
    print(f"{a.model}, input {'x'.join(map(str, size))}: input pixel centres at 0.5, 1.5, ...")
    head = ("", "layer", "type", "map size", "start", "jump", "receptive field")
    body = []
    for t in table:
        rf = t["receptive_field"]
        fmt = lambda v: ", ".join(f"{x:g}" for x in v)  # noqa: E731
        body.append((str(t["index"]), t["name"], t["type"], str(t["map_size"]), fmt(rf["start"]) if rf else "",
                     fmt(rf["jump"]) if rf else "", fmt(rf["size"]) if rf else "all"))
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    for cells in (head, *body):
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    if unit is not None:
        names = ["rows", "columns"] if len(unit["regions"]) == 2 else [f"axis {i}" for i in range(len(unit["regions"]))]
        bounds = ", ".join(f"({r['bounds'][0]:g}, {r['bounds'][1]:g})" for r in unit["regions"])
        unclipped = ", ".join(f"({r['unclipped'][0]:g}, {r['unclipped'][1]:g})" for r in unit["regions"])
        pixels = ", ".join(f"{n} {r['pixels'][0]}-{r['pixels'][1]}" if r["pixels"] else f"{n}: none"
                           for n, r in zip(names, unit["regions"]))
        print(f"\nlayer {unit['index']} ({unit['layer']}), unit {tuple(unit['unit'])}: sees input {pixels} "
              f"(bounds [{bounds}], unclipped [{unclipped}])")
    return 0


def _cmd_experiment(a: argparse.Namespace) -> int:
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
        raise _BadInput(f"{', '.join(given)} apply to the transfer experiment, not {a.name}")
    overrides: dict[str, Any] = {"device": a.device}
    for key in ("epochs", "subset", "val_size", "data_dir"):
        if getattr(a, key) is not None:
            overrides[key] = getattr(a, key)
    result = run_fmnist(out, overwrite=a.overwrite, overrides=overrides, log=log, progress=a.progress)
    print(json.dumps(result, indent=2) if a.json else "\n" + format_fmnist(result))
    return 0


_COMPARE_RECIPE = ("epochs", "subset", "val_size", "batch_size", "lr", "optimizer", "seed", "augment", "data_dir",
                   "device")
_COMPARE_LAYERS = ("in_channels", "out_channels", "size", "batch")


def _cmd_compare(a: argparse.Namespace) -> int:
    from cnnlab.compare import (CompareError, busy_warning, compare_layers, compare_models, format_compare,
                                format_layers)

    flag = lambda k: "--" + k.replace("_", "-")  # noqa: E731
    log = (lambda s: print(s, file=sys.stderr)) if a.json else print
    try:
        if a.layers:
            if a.models:
                raise _BadInput(f"--layers compares single layers; drop the model names ({' '.join(a.models)})")
            given = [flag(k) for k in (*_COMPARE_RECIPE, "overwrite", "progress") if getattr(a, k) not in (None, False)]
            if given:
                raise _BadInput(f"{', '.join(given)} apply to training; --layers trains nothing")
            kwargs = {k: getattr(a, k) for k in _COMPARE_LAYERS if getattr(a, k) is not None}
            from cnnlab._outdir import COMPARE, claim_output

            claim = claim_output(a.out, COMPARE) if a.out else None  # checked before measuring
            try:
                warning = busy_warning(a.threads)
                if warning:
                    print(f"warning: {warning}", file=sys.stderr)
                rows = compare_layers(**kwargs, threads=a.threads, repeats=a.repeats, channels_last=a.channels_last)
                if claim is not None:
                    from cnnlab._io import atomic_write_json, atomic_write_text

                    atomic_write_json(os.path.join(a.out, "layers.json"), rows)
                    atomic_write_text(os.path.join(a.out, "layers.md"), format_layers(rows, markdown=True))
            except BaseException:
                if claim is not None:
                    claim.release(failed=True)
                raise
            if claim is not None:
                claim.release()
            print(json.dumps(rows, indent=2) if a.json else format_layers(rows))
            return 0
        if not a.models:
            from cnnlab.models import list_models

            raise _BadInput(f"give one or more MODELs to compare (registered: {', '.join(list_models())}), "
                            "or --layers")
        given = [flag(k) for k in _COMPARE_LAYERS if getattr(a, k) is not None]
        if given:
            raise _BadInput(f"{', '.join(given)} apply to --layers only")
        overrides = {k: getattr(a, k) for k in _COMPARE_RECIPE[2:] if getattr(a, k) is not None}
        result = compare_models(a.models, epochs=a.epochs, subset=a.subset, out=a.out or "runs/compare",
                                overrides=overrides, threads=a.threads, overwrite=a.overwrite,
                                latency_repeats=a.repeats, channels_last=a.channels_last, log=log,
                                progress=a.progress)
    except CompareError as e:
        raise _BadInput(str(e)) from None
    print(json.dumps(result["rows"], indent=2) if a.json else "\n" + format_compare(result))
    return 0


def _cmd_compress(a: argparse.Namespace) -> int:
    from cnnlab.compress import CompressError
    from cnnlab.compress.run import compress_run
    from cnnlab.compress.sweep import compress_sweep, format_sweep

    log = (lambda s: print(s, file=sys.stderr)) if a.json else print
    given = {key: getattr(a, flag) for flag, (key, _) in _COMPRESS_SETTINGS.items() if getattr(a, flag) is not None}
    common = {"threads": a.threads, "subset": a.subset, "measure": a.latency, "log": log}
    try:
        if a.sweep:
            if a.method or given or a.finetune_epochs is not None:
                raise _BadInput("--sweep runs every method with its own settings; drop --method and the settings")
            result = compress_sweep(a.run, a.out, overwrite=a.overwrite, **common)
            print(json.dumps(result["rows"], indent=2) if a.json else format_sweep(result))
            return 0
        if not a.method:
            raise _BadInput("give --method (prune, quantize, cluster, inq, binarize) or --sweep")
        for flag, (key, methods) in _COMPRESS_SETTINGS.items():
            if key in given and a.method not in methods:
                raise _BadInput(f"--{flag.replace('_', '-')} is a setting of {' and '.join(methods)}, "
                                f"not of --method {a.method}")
        if a.method == "prune" and "sparsity" not in given:
            given["sparsity"] = 0.9
        record = compress_run(a.run, a.method, settings=given, out=a.out, finetune_epochs=a.finetune_epochs,
                              overwrite=a.overwrite, **common)
    except CompressError as e:
        raise _BadInput(str(e)) from None
    if a.json:
        print(json.dumps(record, indent=2))
    return 0


def _cmd_data(a: argparse.Namespace) -> int:
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


class _BadInput(CnnlabError):
    """A bad command-line value or combination of flags, named in the message."""


def _ints(s: str | None, flag: str):
    if s is None:
        return None
    try:
        v = tuple(int(p) for p in s.replace("x", ",").split(","))
    except ValueError:
        raise _BadInput(f"{flag} must be an integer or comma-separated integers; got {s!r}") from None
    return v[0] if len(v) == 1 else v


def _cmd_conv(a: argparse.Namespace) -> int:
    from cnnlab.ops import trace2d
    from cnnlab.ops.examples import EXAMPLES, get_example
    from cnnlab.ops.matrix import format_matrix, load_matrix
    from cnnlab.ops.steps import check_trace2d

    if a.example == "list":
        for name, ex in EXAMPLES.items():
            print(f"{name:15s} {ex.description}")
        return 0
    try:
        example = None
        if a.example is not None:
            example = get_example(a.example)
            if a.input is not None or a.kernel is not None:
                raise ValueError("--example gives the input and kernel; drop --input/--kernel")
            x, kernel, op, options = example.input, example.kernel, example.op, dict(example.options)
        else:
            if a.input is None:
                raise ValueError("give --input MATRIX (or --example NAME)")
            x = load_matrix(a.input, "--input")
            kernel = None if a.kernel is None else load_matrix(a.kernel, "--kernel")
            op, options = a.op or "correlate", {}
        op = a.op or op
        given = {"kernel_size": _ints(a.size, "--size"), "stride": _ints(a.stride, "--stride"),
                 "dilation": _ints(a.dilation, "--dilation"), "padding_mode": a.padding_mode, "value": a.value}
        if a.padding is not None:
            given["padding"] = a.padding if a.padding in ("valid", "same", "full") else _ints(a.padding, "--padding")
        options.update({k: v for k, v in given.items() if v is not None})
        if a.ceil_mode:
            options["ceil_mode"] = True
        if a.exclude_pad:
            options["count_include_pad"] = False
        if op in ("max", "avg"):
            for k in ("padding_mode", "value"):
                if k in options:
                    raise ValueError(f"--{k.replace('_', '-')} applies to correlate/convolve, not {op} pooling")
        elif "kernel_size" in options or a.ceil_mode or a.exclude_pad:
            raise ValueError("--size, --ceil-mode and --exclude-pad apply to pooling (--op max or avg)")
        if op in ("correlate", "convolve") and kernel is None:
            raise ValueError(f"--op {op} needs --kernel MATRIX")
        if a.json:  # the trace, its dict and the JSON text, before any of them is made
            check_trace2d(x, kernel, op, as_json=True, **options)
        trace = trace2d(x, kernel, op, **options)
        frames = []
        if a.animate:
            from cnnlab.ops.animation import AnimationPathError, animate

            try:
                frames = animate(trace, a.animate, fps=a.fps)
            except AnimationPathError as e:
                raise _BadInput(f"--animate {e}") from None
    except ValueError as e:
        raise _BadInput(str(e)) from None
    for note in trace.notes:
        print(f"note: {note}", file=sys.stderr)

    if a.json:
        d = trace.to_dict()
        if example is not None:
            d["example"] = {"name": a.example, "matches_lecture": not example.check(trace.output)}
        if frames:
            d["animation"] = [str(f) for f in frames]
        print(json.dumps(d))
        return 0
    if example is not None:
        print(f"{a.example}: {example.description}")
    names = {"correlate": "correlation", "convolve": "convolution", "max": "max pooling", "avg": "average pooling"}
    (t, b), (l, r) = trace.pads
    pair = lambda v: str(v[0]) if v[0] == v[1] else f"{v[0]},{v[1]}"  # noqa: E731
    padding = "none" if not (t or b or l or r) else (
        f"{t}" if t == b == l == r else f"top {t}, bottom {b}, left {l}, right {r}") + f" ({trace.padding_mode})"
    print(f"{names[trace.op]}: input {trace.input.shape[0]}x{trace.input.shape[1]}, window "
          f"{trace.kernel_size[0]}x{trace.kernel_size[1]}, stride {pair(trace.stride)}, padding {padding}, "
          f"dilation {pair(trace.dilation)} -> output {trace.output.shape[0]}x{trace.output.shape[1]}")
    if a.steps:
        for step in trace.steps:
            print(f"  [{step.index[0]},{step.index[1]}] {step.formula(trace.op)}")
    print(format_matrix(trace.output))
    if example is not None:
        problems = example.check(trace.output)
        print("matches the lecture" if not problems else "DIFFERS from the lecture: " + "; ".join(problems))
    for f in frames[:1]:
        print(f"animation: {f}" + (f" (+{len(frames) - 1} more frames)" if len(frames) > 1 else ""))
    return 0


_COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "predict": _cmd_predict, "models": _cmd_models,
             "experiment": _cmd_experiment, "data": _cmd_data, "conv": _cmd_conv, "summary": _cmd_summary,
             "rf": _cmd_rf, "viz": _cmd_viz, "compare": _cmd_compare,
             "compress": _cmd_compress}


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside a training loop: unwinds like Ctrl-C, so locks are released and partial outputs removed."""


def _on_sigterm(signum, frame):
    raise _Terminated


def _given(argv: Sequence[str] | None) -> set[str]:
    """The destinations the user set on the command line, as opposed to defaults (a second parse in which
    every default is ``SUPPRESS``)."""
    parser = build_parser()
    stack = [parser]
    while stack:
        for action in stack.pop()._actions:
            action.default = argparse.SUPPRESS
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    return set(vars(parser.parse_args(argv)))


def main(argv: Sequence[str] | None = None) -> int:
    from cnnlab.errors import NonFiniteError
    from cnnlab.train import TrainingDivergedError, TrainingInterrupted

    args = build_parser().parse_args(argv)
    args.given = _given(argv)
    in_main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        return _COMMANDS[args.command](args)
    except NonFiniteError as e:
        print(f"cnnlab {args.command}: error: {e}", file=sys.stderr)
        return 1
    except CnnlabError as e:
        print(f"cnnlab {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except TrainingDivergedError as e:
        print(f"cnnlab {args.command}: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"cnnlab {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        what = "terminated (SIGTERM)" if isinstance(e, _Terminated) else "interrupted (Ctrl-C)"
        print(f"\ncnnlab {args.command}: {what}; nothing half-written was left", file=sys.stderr)
        return 143 if isinstance(e, _Terminated) else 130
    except BrokenPipeError:
        return 0
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    raise SystemExit(main())
