"""Named training recipes: ``cnnlab train --recipe default|fast|best``.

A recipe is a set of :class:`~cnnlab.train.config.TrainConfig` settings; :func:`recipe_config` starts from one
and lets every explicitly given setting override it, and the run's ``config.json`` records the recipe's name
and every resolved setting. What each recipe reaches, and in how long, is measured by
``bench/train_fmnist.py`` (bench/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

from cnnlab.train.config import ConfigError, TrainConfig

__all__ = ["RECIPES", "RECIPE_HELP", "recipe_config"]

#: name (``config.RECIPE_NAMES``) -> the settings it changes from TrainConfig's defaults (the ``default`` recipe is
#: those defaults).
RECIPES: dict[str, dict[str, Any]] = {
    # AdamW 2e-3 one-cycle, batch 128, label smoothing 0.1, no augmentation, 8 epochs on 55,000 images (5,000 held
    # out for the validation curve): ~93.9% in about 4 minutes on 2 CPU cores
    "default": {},
    # the same on all 60,000 training images (nothing held out) for 6 epochs: 93.5% and more in about 3 minutes
    "fast": {"epochs": 6, "val_size": 0},
    # beyond the lecture (issue 18's stretch target: 95.5% within an hour on 2 cores): a ResNet-14 at twice the
    # CIFAR width (32-64-128 channels, 696,042 parameters) trained on all 60,000 images for 30 epochs with random
    # crops, flips and random erasing, SGD with Nesterov momentum at a peak lr of 0.1 (one-cycle), weight decay
    # 5e-4: 95.05% (95.31% with flip TTA) in 52 minutes on 2 AMD EPYC cores (bench/RESULTS.md)
    "best": {"model": "resnet-small", "model_kwargs": {"widths": [32, 64, 128]}, "epochs": 30, "val_size": 0,
             "augment": True, "crop_padding": 2, "hflip": True, "random_erasing": 0.5, "optimizer": "sgd",
             "lr": 0.1, "weight_decay": 5e-4},
}

#: One line per recipe, for ``--help`` and the README.
RECIPE_HELP = {
    "default": "the lecture's CNN to ~94% (what `cnnlab experiment fmnist` and `make run` train)",
    "fast": "the short budget: the lecture's CNN to 93.5% as soon as it can",
    "best": "beyond the lecture: the most accurate cnnlab recipe within an hour on 2 CPU cores (a wider ResNet-14, "
            "30 epochs with crops, flips and random erasing)",
}


def recipe_config(name: str = "default", **settings: Any) -> TrainConfig:
    """A :class:`TrainConfig` with recipe ``name``'s settings, then ``settings`` (explicitly given ones win)."""
    if name not in RECIPES:
        raise ConfigError(f"--recipe {name!r} is not a recipe cnnlab has; choose one of: {', '.join(RECIPES)}")
    return TrainConfig(**(RECIPES[name] | settings), recipe=name)
