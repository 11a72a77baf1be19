"""Finding a model's layers by name: the conv layers Grad-CAM, filters and maximisation work on."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnlab.viz._state import VizError, untouched

__all__ = ["conv_layers", "conv_layer", "layer", "activation_after"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# what may sit between a conv and its activation without changing which unit it is (conv -> BN -> ReLU)
_PASS = (nn.BatchNorm2d, nn.Identity, nn.Dropout, nn.Dropout2d, nn.GroupNorm)
_ACT = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Mish, nn.PReLU)


def conv_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every 2D convolution of ``model`` by qualified name, in definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def conv_layer(model: nn.Module, name: str | None = None, default: str = "last") -> tuple[str, nn.Conv2d]:
    """The conv layer ``name`` (default: the ``last`` or ``first`` one; the last is taken from the model's
    ``features`` trunk where it has one, so not a conv of the classifier head). A model whose last block is
    multi-branch (an Inception module) has no single last conv: the default is then its last branch's
    conv, and ``name`` is the way to choose another. A name that is not a conv layer
    raises :class:`VizError` listing the conv layers."""
    convs = conv_layers(model)
    if not convs:
        raise VizError(f"{type(model).__name__} has no Conv2d layer")
    if name is None:
        trunk = [k for k in convs if k.startswith("features.")]  # not a head conv (gap-cnn's class maps)
        key = (trunk or list(convs))[-1] if default == "last" else list(convs)[0]
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


def activation_after(model: nn.Module, name: str, example: torch.Tensor) -> str | None:
    """The name of the activation module that takes conv ``name``'s output, directly or through BatchNorm
    (conv -> ReLU or conv -> BN -> ReLU), found by running ``example`` through the model once in
    ``no_grad`` with hooks that compare tensors by identity; ``None`` if no activation module does (an
    activation called as a function, or the conv feeding an addition first). Its output is the layer's
    activation in the Keras sense: what ``Conv2D(..., activation="relu")`` outputs."""
    modules = dict(model.named_modules())
    layer(model, name)
    order: list[tuple[str, object, object]] = []

    def hook(mod_name):
        return lambda m, i, o: order.append((mod_name, i[0] if i else None, o))

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()
               if n and (n == name or isinstance(m, _PASS + _ACT))]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
    current = next((o for n, _, o in order if n == name), None)
    for n, i, o in order:
        if current is None:
            break
        if i is current and n != name:
            if isinstance(modules[n], _ACT):
                return n
            current = o  # a pass-through module: follow its output
    return None


# Modules that may sit between a conv and its activation without changing what the maps mean.
_ELEMENTWISE = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.Dropout, nn.Dropout2d, nn.Identity)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
                nn.Hardswish)


def grad_cam_module(model: nn.Module, layer: str | None, example: torch.Tensor) -> nn.Module:
    """The module whose output Grad-CAM uses as conv layer ``layer``'s activation maps.

    One forward pass of ``example`` (a batch, e.g. one image) records the order in which the model's
    leaf modules run. After the conv, BatchNorm/GroupNorm, dropout and identity modules may run; the first
    activation function (ReLU and kin) after them is the answer if it runs once and its output has the
    conv output's shape (a residual addition in between is fine). Anything else first -- another conv, a
    pool, a linear layer -- or a shared activation module: the conv itself.
    """
    _, conv = conv_layer(model, layer)
    calls: list[tuple[nn.Module, tuple]] = []
    leaves = [m for m in model.modules() if next(m.children(), None) is None]

    def record(m, i, o):
        calls.append((m, tuple(o.shape) if isinstance(o, torch.Tensor) else ()))

    with untouched(model), torch.no_grad():
        handles = [m.register_forward_hook(record) for m in leaves]
        try:
            model(example.detach())
        finally:
            for h in handles:
                h.remove()
    seen = [i for i, (m, _) in enumerate(calls) if m is conv]
    if len(seen) != 1:
        return conv
    shape = calls[seen[0]][1]
    for m, out_shape in calls[seen[0] + 1:]:
        if isinstance(m, _ACTIVATIONS):
            once = sum(1 for c, _ in calls if c is m) == 1
            return m if once and out_shape == shape else conv
        if not isinstance(m, _ELEMENTWISE):
            return conv
    return conv
