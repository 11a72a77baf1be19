"""The torchvision model zoo by name: ``tv:resnet18``, ``tv:vgg16``, ... (every classification model
of the installed torchvision), built with ``weights=None``: nothing is downloaded. Pretrained weights
come from a local file (``create_model("tv:resnet18", weights="resnet18.safetensors")``).

torchvision's models keep their own structure (``fc``, ``classifier``, ``heads``, ...) so that their
state dicts load unchanged; :data:`HEADS` names each family's classification head.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch.nn as nn

from cnnlab.models.info import ZOO_PREFIX, ModelInfo, UnknownModelError

__all__ = ["zoo_names", "zoo_entrypoint", "zoo_info", "head_name"]

# the attribute holding the final classifier, per architecture family (the longest matching prefix wins)
HEADS = {"resnet": "fc", "resnext": "fc", "wide_resnet": "fc", "regnet": "fc", "googlenet": "fc",
         "inception": "fc", "shufflenet": "fc", "alexnet": "classifier", "vgg": "classifier",
         "densenet": "classifier", "mobilenet": "classifier", "mnasnet": "classifier",
         "efficientnet": "classifier", "convnext": "classifier", "squeezenet": "classifier",
         "maxvit": "classifier", "swin": "head", "vit": "heads"}


def _tvm():
    """``torchvision.models``, imported when a torchvision model is first asked for: the import takes
    longer than torch's own, and most of cnnlab never needs it."""
    import torchvision.models as tvm

    return tvm


@functools.lru_cache(maxsize=1)
def zoo_names() -> tuple[str, ...]:
    """Every classification model of the installed torchvision (``torchvision.models.list_models``)."""
    tvm = _tvm()
    return tuple(sorted(tvm.list_models(module=tvm)))


def _check(arch: str) -> None:
    if arch not in zoo_names():
        raise UnknownModelError(f"unknown torchvision model {arch!r}; valid: {', '.join(zoo_names())}")


def head_name(arch: str) -> str:
    """The attribute of the torchvision model that holds its classification head."""
    _check(arch)
    return HEADS[max((p for p in HEADS if arch.startswith(p)), key=len)]


def zoo_entrypoint(arch: str) -> Callable[..., nn.Module]:
    """A factory ``(num_classes=1000, **torchvision_kwargs) -> nn.Module`` for torchvision's ``arch``."""
    _check(arch)

    def factory(*, num_classes: int = 1000, **kwargs) -> nn.Module:
        tvm = _tvm()
        if arch in ("googlenet", "inception_v3"):
            kwargs.setdefault("init_weights", True)  # silences torchvision's "will change" warning
        try:
            return tvm.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
        except TypeError as e:
            if "unexpected keyword argument" not in str(e):
                raise
            raise TypeError(f"model 'tv:{arch}' got an unexpected argument: {e}") from None

    factory.__name__ = arch
    factory.__doc__ = (f"torchvision's {arch} (randomly initialised; pretrained weights from a local file "
                       f"with --weights). Head: .{head_name(arch)}")
    return factory


@functools.lru_cache(maxsize=None)
def zoo_info(arch: str) -> ModelInfo:
    """Input size: the smallest crop among torchvision's published weights for ``arch`` (224 unless
    stated; a model built with ``weights=None`` has its builder's default size, which the larger
    crops of e.g. ViT's SWAG weights do not match), 1000 classes."""
    tvm = _tvm()
    _check(arch)
    crops = []
    try:
        for w in tvm.get_model_weights(arch):
            crop = w.transforms().crop_size
            crops.append(int(crop[0] if isinstance(crop, (list, tuple)) else crop))
    except (AttributeError, ValueError, TypeError):
        pass
    size = min(crops, default=224)
    return ModelInfo(ZOO_PREFIX + arch, (3, size, size), 1000, "torchvision")
