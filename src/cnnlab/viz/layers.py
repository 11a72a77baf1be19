"""Finding a model's layers by name: the conv layers Grad-CAM, filters and maximisation work on."""

from __future__ import annotations

import torch.nn as nn

from cnnlab.viz._state import VizError

__all__ = ["conv_layers", "conv_layer", "layer"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every 2D convolution of ``model`` by qualified name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def conv_layer(model: nn.Module, name: str | None = None, default: str = "last") -> tuple[str, nn.Conv2d]:
    """The conv layer ``name`` (default: the ``last`` or ``first`` one). A name that is not a conv layer
    raises :class:`VizError` listing the conv layers."""
    convs = conv_layers(model)
    if not convs:
        raise VizError(f"{type(model).__name__} has no Conv2d layer")
    if name is None:
        key = list(convs)[-1 if default == "last" else 0]
        return key, convs[key]
    if name not in convs:
        raise VizError(f"layer {name!r} is not a conv layer; conv layers: {', '.join(convs)}")
    return name, convs[name]


def layer(model: nn.Module, name: str) -> nn.Module:
    """Any submodule by qualified name; an unknown name raises :class:`VizError` listing the valid ones."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        valid = [n for n in modules if n]
        raise VizError(f"unknown layer {name!r}; valid: {', '.join(valid[:40])}"
                       + (f" (+{len(valid) - 40} more)" if len(valid) > 40 else ""))
    return modules[name]
