"""The model registry (after timm's ``register_model`` / ``create_model``).

Every model is one decorated factory function. :func:`create_model` records the registry name and
the full, bound constructor arguments on the model (``model.cnnlab_spec``), which is what a run
directory's ``model.json`` stores and what :func:`build_from_spec` rebuilds from.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable

import torch.nn as nn

from cnnlab.errors import CnnlabError
from cnnlab.models.info import ZOO_PREFIX, ModelArgumentError, ModelInfo, UnknownModelError
from cnnlab.models.pretrained import build_pretrained
from cnnlab.models.weights import load_state_dict_file
from cnnlab.models.zoo import zoo_entrypoint, zoo_info, zoo_names

__all__ = [
    "register_model", "create_model", "list_models", "model_entrypoint", "model_info", "model_spec",
    "count_parameters", "has_conv2d", "ModelArgumentError", "ModelInfo", "UnknownModelError", "ZOO_PREFIX",
]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INFO: dict[str, ModelInfo] = {}


def _check_common(name: str, kwargs: dict[str, Any]) -> None:
    """The arguments most models share, checked before building: sizes are positive integers, a dropout
    probability lies in [0, 1)."""
    def positive_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    for key in ("in_channels", "num_classes"):
        if key in kwargs and not positive_int(kwargs[key]):
            raise ModelArgumentError(f"{name}: {key} must be a positive integer, got {kwargs[key]!r}")
    if "image_size" in kwargs:
        v = kwargs["image_size"]
        sizes = list(v) if isinstance(v, (list, tuple)) else [v]
        if not 1 <= len(sizes) <= 2 or not all(positive_int(x) for x in sizes):
            raise ModelArgumentError(f"{name}: image_size must be a positive integer or [height, width], got {v!r}")
    for key in ("dropout", "head_dropout", "drop_rate"):
        if key in kwargs:
            v = kwargs[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ModelArgumentError(f"{name}: {key} is a probability in [0, 1), got {v!r}")


def register_model(fn: Callable[..., nn.Module] | None = None, *, name: str | None = None,
                   input_size: tuple[int, int, int] = (1, 28, 28), num_classes: int | None = 10):
    """Register a model factory under ``name`` (default: the function's name with ``_`` -> ``-``).

    ``input_size`` and ``num_classes`` describe the model built with its default arguments
    (see :func:`model_info`); tests and ``cnnlab summary`` use them.
    """

    def wrap(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or f.__name__.replace("_", "-")
        if key in _REGISTRY or key.startswith(ZOO_PREFIX):
            raise ValueError(f"model {key!r} is already registered" if key in _REGISTRY else
                             f"model names starting with {ZOO_PREFIX!r} are torchvision's")
        _REGISTRY[key] = f
        _INFO[key] = ModelInfo(key, tuple(input_size), num_classes, "cnnlab")
        return f

    return wrap(fn) if fn is not None else wrap


def list_models(zoo: bool = False) -> list[str]:
    """cnnlab's registered models; with ``zoo``, also every torchvision classification model as
    ``tv:<name>``."""
    names = sorted(_REGISTRY)
    if zoo:
        names += [ZOO_PREFIX + n for n in zoo_names()]
    return names


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The factory function registered as ``name`` (its docstring describes the model)."""
    if name.startswith(ZOO_PREFIX):
        return zoo_entrypoint(name[len(ZOO_PREFIX):])
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; valid: {', '.join(list_models())}, or "
                                f"{ZOO_PREFIX}NAME for a torchvision model (`cnnlab models --zoo` lists them)")
    return _REGISTRY[name]


def model_info(name: str) -> ModelInfo:
    """Input size and number of classes of model ``name`` as built with its default arguments."""
    if name.startswith(ZOO_PREFIX):
        return zoo_info(name[len(ZOO_PREFIX):])
    model_entrypoint(name)  # unknown names: the usual error
    return _INFO[name]


def _jsonable(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


def create_model(name: str, weights: str | None = None, *, pretrained: str | None = None, progress: bool | None = None,
                 **kwargs: Any) -> nn.Module:
    """Build model ``name`` (registered, or ``tv:<torchvision name>``); unknown keyword arguments are
    an error naming the valid ones. ``weights``: a local state dict to load (see
    :func:`cnnlab.models.load_state_dict_file`). ``pretrained``: torchvision's published weights of that name
    (``"DEFAULT"``, ``"IMAGENET1K_V1"``; a ``tv:`` model only) from torch hub's cache, downloaded into it when
    missing (:mod:`cnnlab.models.pretrained`; ``progress``: its progress bar); the model's
    ``cnnlab_pretrained`` then says which weights and preprocessing, and its spec records them."""
    if pretrained is not None:
        if not name.startswith(ZOO_PREFIX):
            raise ModelArgumentError(f"--pretrained applies to torchvision models (tv:NAME); {name!r} is cnnlab's own "
                                     "(train it, or give a tv:NAME)")
        if weights is not None:
            raise ModelArgumentError("--pretrained and --weights both give the weights; use one")
    fn = model_entrypoint(name)
    sig = inspect.signature(fn)
    try:
        bound = sig.bind(**kwargs)
    except TypeError:
        bad = sorted(set(kwargs) - set(sig.parameters))
        valid = [p for p, v in sig.parameters.items() if v.kind is not inspect.Parameter.VAR_KEYWORD]
        raise ModelArgumentError(
            f"model {name!r} got unexpected argument(s) {', '.join(bad) or kwargs}; valid: {', '.join(valid)}"
        ) from None
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    for p, v in sig.parameters.items():  # a factory's **kwargs: record them flat
        if v.kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(arguments.pop(p, {}))
    _check_common(name, kwargs)
    given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "its defaults"
    info = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if pretrained is not None:
                model, info, arguments = build_pretrained(name[len(ZOO_PREFIX):], pretrained, progress=progress,
                                                          **arguments)
            else:
                model = fn(**arguments)
        except CnnlabError:
            raise
        except (TypeError, ValueError, RuntimeError, ZeroDivisionError, IndexError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelArgumentError(f"cannot build {name} with {given}: {first}") from None
    # a layer of zero size, a degenerate shape: torch only warns; a model built so would not work
    broken = [w for w in caught if issubclass(w.category, UserWarning) and not issubclass(w.category, FutureWarning)]
    if broken:
        raise ModelArgumentError(f"cannot build {name} with {given}: {str(broken[0].message).splitlines()[0]}")
    model.cnnlab_spec = {"name": name, "kwargs": {k: _jsonable(v) for k, v in arguments.items()}}
    if info is not None:
        model.cnnlab_spec["pretrained"] = info.name  # a record: the spec rebuilds the architecture, not the weights
        model.cnnlab_pretrained = info
    if weights is not None:
        load_state_dict_file(model, weights)
    return model


def model_spec(model: nn.Module) -> dict:
    """The ``{"name", "kwargs"}`` record of a model made by :func:`create_model`."""
    spec = getattr(model, "cnnlab_spec", None)
    if spec is None:
        raise ValueError(f"{type(model).__name__} was not made by cnnlab.models.create_model; it has no spec")
    return spec


def has_conv2d(model) -> bool:
    """Whether ``model`` has a 2-D convolution (an ``nn.Conv2d`` or any 4-D weight): the one rule for running
    it in channels-last memory format, in training, evaluation, latency and compression alike."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules()) or any(p.ndim == 4 for p in model.parameters())


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of parameters (not buffers) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
