"""Named training recipes: ``cnnlab train --recipe default|fast``.

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
}

#: One line per recipe, for ``--help`` and the README.
RECIPE_HELP = {
    "default": "the lecture's CNN to ~94% (what `cnnlab experiment fmnist` and `make run` train)",
    "fast": "the short budget: the lecture's CNN to 93.5% as soon as it can",
}


def recipe_config(name: str = "default", **settings: Any) -> TrainConfig:
    """A :class:`TrainConfig` with recipe ``name``'s settings, then ``settings`` (explicitly given ones win)."""
    if name not in RECIPES:
        raise ConfigError(f"--recipe {name!r} is not a recipe cnnlab has; choose one of: {', '.join(RECIPES)}")
    return TrainConfig(**(RECIPES[name] | settings), recipe=name)
