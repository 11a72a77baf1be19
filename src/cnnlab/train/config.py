"""The training configuration: one dataclass, saved with every run (``config.json``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig", "ConfigError", "OPTIMIZERS", "SCHEDULES", "PRECISIONS", "DEVICES"]

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "cosine", "step", "constant")
PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


#: Per-optimizer defaults, used when ``lr`` / ``weight_decay`` are left at None.
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 3e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adam": 0.0, "adamw": 5e-3}


class ConfigError(ValueError):
    """A setting is out of range; the message names the flag and what would be valid."""


@dataclass
class TrainConfig:
    """Every setting of a training run. The defaults are cnnlab's recipe for the lecture's CNN
    (measured in bench/RESULTS.md)."""

    model: str = "fmnist-cnn"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    val_size: int = 5000
    subset: int | None = None
    epochs: int = 20
    batch_size: int = 256
    lr: float | None = None  # None: the optimizer's default (DEFAULT_LR)
    optimizer: str = "adamw"
    momentum: float = 0.9
    weight_decay: float | None = None  # None: the optimizer's default (DEFAULT_WEIGHT_DECAY)
    schedule: str = "onecycle"
    warmup: float = 0.15
    label_smoothing: float = 0.1
    augment: bool = True
    crop_padding: int = 0  # random crops hurt within 15 epochs (bench/RESULTS.md); flips help
    hflip: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    eval_batch_size: int = 1000
    checkpoint_interval: float = 60.0

    def validate(self) -> "TrainConfig":
        """Check every setting (raising :class:`ConfigError`) and fill in optimizer defaults."""
        def choice(flag: str, value: str, valid: tuple[str, ...]) -> None:
            if value not in valid:
                raise ConfigError(f"{flag} {value!r} is not valid; choose one of: {', '.join(valid)}")

        choice("--optimizer", self.optimizer, OPTIMIZERS)
        choice("--schedule", self.schedule, SCHEDULES)
        choice("--precision", self.precision, PRECISIONS)
        if not (self.device in DEVICES or self.device.startswith("cuda:")):
            raise ConfigError(f"--device {self.device!r} is not valid; choose one of: {', '.join(DEVICES)}, cuda:N")
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size),
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
        if self.val_size < 0:
            raise ConfigError(f"--val-size must be 0 or more, got {self.val_size!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be 0 or more, got {self.weight_decay!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"--warmup must be in [0, 1), got {self.warmup!r}")
        if self.crop_padding < 0:
            raise ConfigError(f"--crop-padding must be 0 or more, got {self.crop_padding!r}")
        if self.checkpoint_interval <= 0:
            raise ConfigError(f"--checkpoint-interval must be positive seconds, got {self.checkpoint_interval!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
