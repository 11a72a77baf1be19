"""What every model module shares, at the bottom of :mod:`cnnlab.models`: the record of what a model
expects (:class:`ModelInfo`), the torchvision name prefix, and the registry's two errors."""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.errors import CnnlabError

__all__ = ["ModelArgumentError", "ModelInfo", "UnknownModelError", "ZOO_PREFIX"]

#: Names of torchvision's models in cnnlab's registry: ``tv:resnet18``.
ZOO_PREFIX = "tv:"


@dataclass(frozen=True)
class ModelInfo:
    """What a model expects and gives: ``input_size`` (C, H, W) it is built for by default, and
    ``num_classes`` of its output (None: it outputs a feature map, not class scores)."""

    name: str
    input_size: tuple[int, int, int]
    num_classes: int | None
    source: str  # "cnnlab" or "torchvision"


class UnknownModelError(CnnlabError):
    """A model name that is neither registered nor one of torchvision's; the message lists the valid ones."""


class ModelArgumentError(CnnlabError, TypeError):
    """A model's constructor arguments are unknown or out of range; the message names them and the valid ones."""
