"""The model registry (after timm's ``register_model`` / ``create_model``).

Every model is one decorated factory function. :func:`create_model` records the registry name and
the full, bound constructor arguments on the model (``model.cnnlab_spec``), which is what a run
directory's ``model.json`` stores and what :func:`build_from_spec` rebuilds from.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch.nn as nn

__all__ = [
    "register_model", "create_model", "list_models", "model_entrypoint", "model_spec", "build_from_spec",
    "UnknownModelError",
]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class UnknownModelError(ValueError):
    pass


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None):
    """Register a model factory under ``name`` (default: the function's name with ``_`` -> ``-``)."""

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__.replace("_", "-")
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = f
        return f

    return wrap(fn) if fn is not None else wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The factory function registered as ``name`` (its docstring describes the model)."""
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    return _REGISTRY[name]


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build registered model ``name``; unknown keyword arguments are an error naming the valid ones."""
    fn = model_entrypoint(name)
    sig = inspect.signature(fn)
    try:
        bound = sig.bind(**kwargs)
    except TypeError:
        bad = sorted(set(kwargs) - set(sig.parameters))
        raise TypeError(
            f"model {name!r} got unexpected argument(s) {', '.join(bad) or kwargs}; valid: {', '.join(sig.parameters)}"
        ) from None
    bound.apply_defaults()
    model = fn(**bound.arguments)
    model.cnnlab_spec = {"name": name, "kwargs": {k: _jsonable(v) for k, v in bound.arguments.items()}}
    return model


def model_spec(model: nn.Module) -> dict:
    """The ``{"name", "kwargs"}`` record of a model made by :func:`create_model`."""
    spec = getattr(model, "cnnlab_spec", None)
    if spec is None:
        raise ValueError(f"{type(model).__name__} was not made by cnnlab.models.create_model; it has no spec")
    return spec


def build_from_spec(spec: dict) -> nn.Module:
    return create_model(spec["name"], **spec.get("kwargs", {}))
