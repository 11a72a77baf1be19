"""Building a model for the input it will see, and rebuilding one from its recorded spec: the top of
:mod:`cnnlab.models` (it uses the registry and the transfers).

:func:`input_kwargs` is the one rule that turns an input size into constructor arguments: training
builds a model for its data with it, ``cnnlab summary/rf --input`` and the explorer build one for the
size a user asks for.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch.nn as nn

from cnnlab.models.info import ModelArgumentError
from cnnlab.models.registry import create_model, model_entrypoint, model_info
from cnnlab.models.transfer import apply_transfer_spec

__all__ = ["build_for_input", "build_from_spec", "check_input_size", "input_kwargs"]


def check_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    """``input_size`` as a tuple: (C, H, W), or (C, L) / (C, D, H, W), positive integers; a
    :class:`ModelArgumentError` naming it otherwise."""
    size = tuple(input_size) if isinstance(input_size, (list, tuple)) else ()
    if (len(size) not in (2, 3, 4)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise ModelArgumentError(f"input_size must be (C, H, W) (or (C, L) / (C, D, H, W)) positive integers, "
                                 f"got {input_size!r}")
    return size


def input_kwargs(name: str, input_size: Sequence[int], *, num_classes: int | None = None) -> dict[str, Any]:
    """The constructor arguments that make model ``name`` take ``input_size`` images (C, H, W; or
    C, L / C, D, H, W) and give ``num_classes`` scores: ``in_channels``, ``image_size`` (an int for a
    square image, else [H, W]; 2-D images only) and ``num_classes``, each only where the model's
    factory has that parameter."""
    size = check_input_size(input_size)
    accepted = inspect.signature(model_entrypoint(name)).parameters
    kwargs: dict[str, Any] = {}
    if "in_channels" in accepted:
        kwargs["in_channels"] = size[0]
    if "image_size" in accepted and len(size) == 3:
        kwargs["image_size"] = size[1] if size[1] == size[2] else list(size[1:])
    if num_classes is not None and "num_classes" in accepted:
        kwargs["num_classes"] = num_classes
    return kwargs


def build_for_input(name: str, input_size: Sequence[int] | None = None, *, num_classes: int | None = None,
                    weights: str | None = None, pretrained: str | None = None, **kwargs: Any) -> nn.Module:
    """Model ``name`` built for ``input_size`` images and ``num_classes`` classes (default: what it
    is registered for, :func:`model_info`); ``kwargs`` are constructor arguments that take precedence
    over the derived ones (:func:`input_kwargs`); ``weights``: a local state dict to load; ``pretrained``:
    torchvision's published weights of that name (:func:`cnnlab.models.create_model`).

    A model that cannot be told its input channels (no ``in_channels`` parameter, e.g. torchvision's)
    and is built for another number is refused here, not at its first forward pass."""
    if input_size is not None:
        size = check_input_size(input_size)
        kwargs = input_kwargs(name, size, num_classes=num_classes) | kwargs
        channels = model_info(name).input_size[0]
        if "in_channels" not in kwargs and size[0] != channels:
            raise ModelArgumentError(f"{name} takes {channels}-channel images (it has no in_channels argument), "
                                     f"not input_size {list(size)}")
    elif num_classes is not None and "num_classes" in inspect.signature(model_entrypoint(name)).parameters:
        kwargs.setdefault("num_classes", num_classes)
    return create_model(name, weights=weights, pretrained=pretrained, **kwargs)


def build_from_spec(spec: dict) -> nn.Module:
    """The model a spec describes, with fresh weights: ``create_model(name, **kwargs)``, then the
    transfers recorded under ``"transfer"`` (:func:`cnnlab.models.transfer.apply_transfer_spec`)."""
    model = create_model(spec["name"], **spec.get("kwargs", {}))
    if spec.get("transfer"):
        apply_transfer_spec(model, spec["transfer"])
    return model
