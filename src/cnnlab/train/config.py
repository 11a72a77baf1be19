"""The training configuration: one dataclass, saved with every run (``config.json``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from cnnlab.data.datasets import FASHION_MNIST_VAL_SIZE, is_image_folder, load_dataset
from cnnlab.data.splits import DataSplits
from cnnlab.errors import CnnlabError

__all__ = ["TrainConfig", "ConfigError", "DEFAULT_BATCH_SIZE", "OPTIMIZERS", "SCHEDULES", "PRECISIONS", "DEVICES",
           "RECIPE_NAMES", "TTA_METHODS"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
#: The named recipes (their settings: cnnlab.train.recipes.RECIPES).
RECIPE_NAMES = ("default", "fast", "best")
#: Test-time augmentations (cnnlab.train.evaluation applies them): flip averages an image and its mirror.
TTA_METHODS = ("flip",)


#: The batch size when none is given (a smaller training set is one batch).
DEFAULT_BATCH_SIZE = 128
#: Per-optimizer defaults, used when ``lr`` / ``weight_decay`` are left at None.
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 2e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adam": 0.0, "adamw": 5e-3}


#: The settings that are numbers (checked finite: ``--lr inf`` is refused like ``--lr 0``).
_NUMBERS = ("lr", "momentum", "weight_decay", "warmup", "label_smoothing", "backbone_lr_mult", "checkpoint_interval",
            "epochs", "batch_size", "eval_batch_size", "crop_padding", "random_erasing", "seed")


class ConfigError(CnnlabError):
    """A setting is out of range; the message names the flag and what would be valid."""


@dataclass
class TrainConfig:
    """Every setting of a training run. The defaults are cnnlab's recipe for the lecture's CNN
    (measured in bench/RESULTS.md); :func:`cnnlab.train.recipes.recipe_config` starts from another named one."""

    # the named recipe these settings started from (cnnlab.train.recipes): a record, the settings are below
    recipe: str = "default"
    model: str = "fmnist-cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    # a count of images, or (image folders) a fraction of each class; None: the dataset's default
    # (Fashion-MNIST: 5,000, filled in by validate(); folders: 0.1 where there is no val/ folder)
    val_size: int | float | None = None
    subset: int | None = None
    # image folders (--dataset folder:PATH): output size (H, or [H, W]; None: 64) after resizing the
    # shorter side and cropping the centre, and channels (None: grayscale only if every image is)
    image_size: int | list[int] | None = None
    grayscale: bool | None = None
    classes: list[str] | None = None  # keep these classes (names, in this order); None: all
    per_class: int | None = None  # at most N training images per class
    # transfer learning (`cnnlab train --from`): the source (a run directory or tv:NAME; `model` is then
    # the source's architecture), its weights file (tv:NAME), the new head (None: the source's default),
    # what is frozen ("features", "none" or the first N blocks) and the backbone's share of the lr
    source: str | None = None
    weights: str | None = None
    pretrained: str | None = None  # tv:NAME's published weights by name (DEFAULT, IMAGENET1K_V1): cnnlab.models.pretrained
    head: str | None = None
    freeze: str | int = "features"
    backbone_lr_mult: float = 0.1
    epochs: int = 8
    # None: DEFAULT_BATCH_SIZE, or the whole training set as one batch when it is smaller (the run says so)
    batch_size: int | None = None
    lr: float | None = None  # None: the optimizer's default (DEFAULT_LR)
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float | None = None  # None: the optimizer's default (DEFAULT_WEIGHT_DECAY)
    schedule: str = "onecycle"
    warmup: float = 0.15
    label_smoothing: float = 0.1
    augment: bool = False  # off: within 8 epochs flips cost accuracy (bench/RESULTS.md); --augment for long runs
    crop_padding: int = 0  # random crops hurt within 15 epochs (bench/RESULTS.md); flips help
    hflip: bool = True
    random_erasing: float = 0.0  # with --augment: the share of images that get a random rectangle erased
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    eval_batch_size: int = 1000
    checkpoint_interval: float = 60.0
    # after training, also test with this test-time augmentation (one of TTA_METHODS); the
    # run's test accuracy stays the plain one, the augmented one is recorded beside it, labelled
    tta: str | None = None

    def validate(self) -> "TrainConfig":
        """Check every setting (raising :class:`ConfigError`) and fill in optimizer defaults."""
        def choice(flag: str, value: str, valid: tuple[str, ...]) -> None:
            if value not in valid:
                raise ConfigError(f"{flag} {value!r} is not valid; choose one of: {', '.join(valid)}")

        for name in ("recipe", "model", "dataset", "optimizer", "schedule", "device", "precision"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"--{name.replace('_', '-')} must be a name, got {getattr(self, name)!r}")
        for name in _NUMBERS:
            v = getattr(self, name)
            if v is None and name in ("lr", "weight_decay", "batch_size"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, got {v!r}")
        if not isinstance(self.model_kwargs, dict):
            raise ConfigError(f"model_kwargs must be a mapping of constructor arguments, got {self.model_kwargs!r}")
        choice("--recipe", self.recipe, RECIPE_NAMES)
        choice("--optimizer", self.optimizer, OPTIMIZERS)
        choice("--schedule", self.schedule, SCHEDULES)
        choice("--precision", self.precision, PRECISIONS)
        if self.tta is not None:
            choice("--tta", self.tta, TTA_METHODS)
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ConfigError(f"--device {self.device!r} is not valid; choose one of: {', '.join(DEVICES)}, cuda:N")
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size or DEFAULT_BATCH_SIZE),
                            ("--eval-batch-size", self.eval_batch_size)):
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{flag} must be a positive integer, got {value!r}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        if self.weight_decay is None:
            self.weight_decay = DEFAULT_WEIGHT_DECAY[self.optimizer]
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr!r}")
        if self.subset is not None and self.subset <= 0:
            raise ConfigError(f"--subset must be a positive integer, got {self.subset!r}")
        folder = is_image_folder(self.dataset)  # folder:PATH, or a downloaded image folder (oxford-pets, ...)
        if self.val_size is None and not folder:
            self.val_size = FASHION_MNIST_VAL_SIZE
        if isinstance(self.val_size, float) and not folder:
            raise ConfigError(f"--val-size {self.val_size!r}: {self.dataset} takes a count of images (fractions are "
                              "for image folders)")
        if isinstance(self.val_size, float) and not 0 <= self.val_size < 1:
            raise ConfigError(f"--val-size {self.val_size!r}: a fraction must be in [0, 1)")
        if isinstance(self.val_size, int) and self.val_size < 0:
            raise ConfigError(f"--val-size must be 0 or more, got {self.val_size!r}")
        if not folder and (self.image_size is not None or self.grayscale is not None):
            raise ConfigError(f"--image-size and --grayscale apply to image folders (--dataset folder:PATH), "
                              f"not {self.dataset}")
        if self.image_size is not None:
            sizes = list(self.image_size) if isinstance(self.image_size, (list, tuple)) else [self.image_size]
            if not 1 <= len(sizes) <= 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                   for v in sizes):
                raise ConfigError(f"--image-size must be N or H,W (positive integers), got {self.image_size!r}")
            self.image_size = sizes[0] if len(sizes) == 1 else sizes
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be 0 or more, got {self.weight_decay!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"--warmup must be in [0, 1), got {self.warmup!r}")
        if not 0 <= self.random_erasing <= 1:
            raise ConfigError(f"--random-erasing must be a probability in [0, 1], got {self.random_erasing!r}")
        if self.crop_padding < 0:
            raise ConfigError(f"--crop-padding must be 0 or more, got {self.crop_padding!r}")
        if self.per_class is not None and (not isinstance(self.per_class, int) or self.per_class <= 0):
            raise ConfigError(f"--per-class must be a positive integer, got {self.per_class!r}")
        if self.source is None:
            given = [flag for flag, v in (("--weights", self.weights), ("--pretrained", self.pretrained),
                                          ("--head", self.head)) if v is not None]
            if given:
                raise ConfigError(f"{' and '.join(given)} apply to transfer learning; give --from RUN or tv:NAME")
        elif self.model_kwargs:
            raise ConfigError(f"--model-arg {', '.join(self.model_kwargs)}: the architecture is the --from source's; "
                              "drop --model-arg")
        if not (self.freeze in ("features", "none") or
                (isinstance(self.freeze, int) and not isinstance(self.freeze, bool) and self.freeze >= 0)):
            raise ConfigError(f"--freeze {self.freeze!r} is not valid; choose features, none, or a number of blocks "
                              "(0, 1, ...)")
        if not self.backbone_lr_mult > 0:
            raise ConfigError(f"--backbone-lr-mult must be positive, got {self.backbone_lr_mult!r} (to keep the "
                              "backbone fixed, use --freeze features)")
        if self.checkpoint_interval <= 0:
            raise ConfigError(f"--checkpoint-interval must be positive seconds, got {self.checkpoint_interval!r}")
        return self

    def load_data(self, *, data_dir: str | None = None, log: Any = None, **overrides: Any) -> DataSplits:
        """The dataset as this recipe trains on it: the same split, classes, image transform and subset
        (``data_dir`` overrides the recorded folder; ``overrides`` replace ``load_dataset`` arguments, e.g.
        ``subset``). Training, ``eval``, ``viz`` and ``compress`` all load a run's data through here."""
        kwargs = {"val_size": self.val_size, "subset": self.subset, "seed": self.seed, "image_size": self.image_size,
                  "grayscale": self.grayscale, "classes": self.classes, "per_class": self.per_class, "log": log}
        return load_dataset(self.dataset, data_dir or self.data_dir, **(kwargs | overrides))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
