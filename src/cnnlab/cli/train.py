"""``cnnlab train``: a TrainConfig from the flags, then ``train.fit`` (or ``--resume``, or
``--extract-features``)."""

from __future__ import annotations

import argparse
import os

from cnnlab.cli._types import (BadInput, _count_or_fraction, _finite_float, _freeze, _image_size, _key_value, _names,
                               _non_negative_int, _positive_float, _positive_int, add_pretrained_arg)

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model into a run directory")
    _add_train_args(p)
    p.set_defaults(func=run)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from cnnlab.models.transfer import TRANSFER_HEADS
    from cnnlab.train.config import (DEFAULT_BATCH_SIZE, DEFAULT_LR, DEFAULT_WEIGHT_DECAY, OPTIMIZERS, PRECISIONS,
                                     SCHEDULES, TTA_METHODS, TrainConfig)
    from cnnlab.train.recipes import RECIPE_HELP, RECIPES

    c = TrainConfig()  # the defaults live in one place
    per_opt = lambda table: ", ".join(f"{k} {v:g}" for k, v in table.items())  # noqa: E731
    d = p.add_argument_group("what to train")
    d.add_argument("--model", help=f"registered model (see `cnnlab models`; {c.model})")
    d.add_argument("--model-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="constructor argument for the model (JSON value), repeatable")
    d.add_argument("--dataset", default=c.dataset,
                   help="fashion-mnist, known-answer (synthetic, with the evidence's box of every image), a downloaded "
                        "one (cifar10, dogs-vs-cats, oxford-pets, imagenette: `cnnlab data download NAME`), or "
                        "folder:PATH (class folders, or train/ [val/] [test/] of class folders)")
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
                   help="tv:NAME's pretrained weights from a local file (.safetensors, or .pth read with weights_only)")
    add_pretrained_arg(t)
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
    h = p.add_argument_group("recipe (defaults: the --recipe's; a flag given here overrides its value)")
    h.add_argument("--recipe", choices=RECIPES, default="default",
                   help="; ".join(f"{k}: {v}" for k, v in RECIPE_HELP.items()).replace("%", "%%"))
    h.add_argument("--epochs", type=_positive_int, default=c.epochs)
    h.add_argument("--batch-size", type=_positive_int, default=None,
                   help=f"{DEFAULT_BATCH_SIZE}, or the whole training set when it is smaller")
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
    h.add_argument("--random-erasing", type=_finite_float, default=c.random_erasing, metavar="P",
                   help="the share of images that get a random rectangle of noise (Zhong et al. 2017) "
                        f"({c.random_erasing:g}: off)")
    h.add_argument("--seed", type=int, default=c.seed)
    r = p.add_argument_group("how")
    r.add_argument("--device", default=None, help="auto (CUDA when present), cpu, cuda, cuda:N")
    r.add_argument("--precision", choices=PRECISIONS, default=c.precision,
                   help="auto: bf16 where the hardware has it natively, else fp32")
    r.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=c.channels_last)
    r.add_argument("--compile", action="store_true", help="torch.compile the model")
    r.add_argument("--tta", choices=TTA_METHODS,
                   help="also report the test accuracy with this test-time augmentation (flip: each image and its "
                        "mirror), labelled, beside the plain one")
    r.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm in distributed CUDA training")
    r.add_argument("--checkpoint-interval", type=_positive_float, default=c.checkpoint_interval, metavar="SECONDS",
                   help=f"also checkpoint mid-epoch this often ({c.checkpoint_interval:g})")
    o = p.add_argument_group("output")
    o.add_argument("--out", help="run directory (default runs/<model>-<time>)")
    o.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint (its own settings)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar (default: when stderr is a terminal)")


#: What `train --resume RUN` takes besides the run: where to train and how to show it (the rest is the run's).
_RESUME_TAKES = {"command", "resume", "device", "progress"}


def run(a: argparse.Namespace) -> int:
    from cnnlab.train import TrainConfig, fit
    from cnnlab.train.recipes import RECIPES, recipe_config

    recipe_keys = set(RECIPES[a.recipe])

    if a.resume:
        ignored = sorted(a.given - _RESUME_TAKES)
        if ignored:
            flags = ", ".join("--" + k.replace("_", "-") if k != "source" else "--from" for k in ignored)
            raise BadInput(f"--resume {a.resume} continues with the run's own settings (its config.json); drop "
                           f"{flags} (to train with other settings, start a new run with --out)")
        metrics = fit(resume=a.resume, device=a.device, progress=a.progress)
        run = a.resume
    else:
        transfer_flags = {"--weights": a.weights, "--pretrained": a.pretrained, "--head": a.head, "--freeze": a.freeze,
                          "--backbone-lr-mult": a.backbone_lr_mult, "--extract-features": a.extract_features}
        given = [flag for flag, v in transfer_flags.items() if v is not None]
        if a.source is None and given:
            raise BadInput(f"{', '.join(given)} apply to transfer learning; give --from RUN or tv:NAME")
        if a.source is not None and a.model is not None:
            raise BadInput(f"--model {a.model} and --from {a.source}: the architecture is the source's; drop --model")
        optional = {k: v for k, v in (("freeze", a.freeze), ("backbone_lr_mult", a.backbone_lr_mult)) if v is not None}
        settings = dict(
            model=a.model or TrainConfig.model, model_kwargs=dict(a.model_arg), dataset=a.dataset, data_dir=a.data_dir,
            val_size=a.val_size, subset=a.subset, image_size=a.image_size, grayscale=a.grayscale, epochs=a.epochs,
            batch_size=a.batch_size, lr=a.lr,
            optimizer=a.optimizer, momentum=a.momentum, weight_decay=a.weight_decay, schedule=a.schedule,
            warmup=a.warmup, label_smoothing=a.label_smoothing, augment=a.augment, crop_padding=a.crop_padding,
            hflip=a.hflip, random_erasing=a.random_erasing, seed=a.seed, device=a.device or "auto", precision=a.precision,
            channels_last=a.channels_last, compile=a.compile, sync_bn=a.sync_bn,
            checkpoint_interval=a.checkpoint_interval, classes=a.classes, per_class=a.per_class,
            source=a.source, weights=a.weights, pretrained=a.pretrained, head=a.head, tta=a.tta, **optional,
        )
        # the recipe's values, then every flag the user gave (a flag left out takes the recipe's value)
        given = a.given | ({"model_kwargs"} if "model_arg" in a.given else set())
        cfg = recipe_config(a.recipe, **{k: v for k, v in settings.items() if k in given or k not in recipe_keys})
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
        tta = metrics.get("tta")
        extra = f"  {tta['label']}: {100 * tta['test_accuracy']:.2f}%" if tta else ""
        print(f"test accuracy {100 * metrics['test_accuracy']:.2f}%{extra}  ({metrics['test_images']} images)  "
              f"train {metrics['train_seconds']:.0f}s  {metrics['images_per_s']:.0f} img/s  -> {run}")
    return 0
