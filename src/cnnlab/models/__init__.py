"""Models: the registry and the model families. Importing this package registers every model."""

from cnnlab.models import lecture  # noqa: F401  (registers fmnist-cnn, mlp)
from cnnlab.models.lecture import MLP, FashionCNN
from cnnlab.models.registry import (
    UnknownModelError,
    build_from_spec,
    create_model,
    list_models,
    model_entrypoint,
    model_spec,
    register_model,
)


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of parameters (not buffers) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "FashionCNN", "MLP", "UnknownModelError", "build_from_spec", "count_parameters",
    "create_model", "list_models", "model_entrypoint", "model_spec", "register_model",
]
