"""Models: the registry and the model families. Importing this package registers every model."""

from cnnlab.models import lecture  # noqa: F401  (registers fmnist-cnn, mlp, catsdogs-cnn, rf-demo)
from cnnlab.models import classic  # noqa: F401  (registers vgg-small, resnet-small, inception-small, gap-cnn)
from cnnlab.models import compact  # noqa: F401  (registers fmnist-separable, -grouped, -shuffle, -sparse, -gap, ...)
from cnnlab.models.classic import BasicBlock, GapCNN, InceptionModule, InceptionSmall, ResNetSmall, VGGSmall
from cnnlab.models.compact import CompactCNN
from cnnlab.models.lecture import MLP, CatsDogsCNN, FashionCNN, RFDemo
from cnnlab.models.registry import (
    ModelArgumentError,
    UnknownModelError,
    build_from_spec,
    create_model,
    list_models,
    ModelInfo,
    ZOO_PREFIX,
    model_entrypoint,
    model_info,
    model_spec,
    register_model,
)
from cnnlab.models.transfer import (
    TRANSFER_HEADS,
    EvalBatchNorm1d,
    EvalBatchNorm2d,
    EvalBatchNorm3d,
    TransferError,
    adapt_input_channels,
    default_head,
    freeze,
    head_module,
    replace_head,
    transfer,
    transfer_blocks,
)
from cnnlab.models.weights import WeightsError, load_state_dict_file, read_state_dict


def has_conv2d(model) -> bool:
    """Whether ``model`` has a 2-D convolution (an ``nn.Conv2d`` or any 4-D weight): the one rule for running
    it in channels-last memory format, in training, evaluation, latency and compression alike."""
    import torch.nn as nn

    return any(isinstance(m, nn.Conv2d) for m in model.modules()) or any(p.ndim == 4 for p in model.parameters())


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of parameters (not buffers) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


__all__ = [
    "BasicBlock", "CatsDogsCNN", "CompactCNN", "FashionCNN", "GapCNN", "InceptionModule", "InceptionSmall", "MLP", "RFDemo",
    "ResNetSmall", "VGGSmall", "ModelInfo", "ModelArgumentError", "UnknownModelError", "WeightsError", "ZOO_PREFIX", "build_from_spec",
    "count_parameters", "has_conv2d", "create_model", "list_models", "load_state_dict_file", "model_entrypoint", "model_info",
    "model_spec", "read_state_dict", "register_model",
    "TRANSFER_HEADS", "EvalBatchNorm1d", "EvalBatchNorm2d", "EvalBatchNorm3d", "TransferError", "adapt_input_channels",
    "default_head", "freeze", "head_module", "replace_head", "transfer", "transfer_blocks",
]
