"""Models: the registry and the model families. Importing this package registers every model."""

from cnnlab.models import lecture  # noqa: F401  (registers fmnist-cnn, mlp, catsdogs-cnn, rf-demo)
from cnnlab.models import classic  # noqa: F401  (registers vgg-small, resnet-small, inception-small, gap-cnn)
from cnnlab.models import compact  # noqa: F401  (registers fmnist-separable, -grouped, -shuffle, -sparse, -gap, ...)
from cnnlab.models.classic import BasicBlock, GapCNN, InceptionModule, InceptionSmall, ResNetSmall, VGGSmall
from cnnlab.models.compact import CompactCNN
from cnnlab.models.lecture import MLP, CatsDogsCNN, FashionCNN, RFDemo
from cnnlab.models.build import build_for_input, build_from_spec, check_input_size, input_kwargs
from cnnlab.models.info import ZOO_PREFIX, ModelArgumentError, ModelInfo, UnknownModelError
from cnnlab.models.registry import (count_parameters, create_model, has_conv2d, list_models, model_entrypoint,
                                    model_info, model_spec, register_model)
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


__all__ = [
    "BasicBlock", "CatsDogsCNN", "CompactCNN", "FashionCNN", "GapCNN", "InceptionModule", "InceptionSmall", "MLP", "RFDemo",
    "ResNetSmall", "VGGSmall", "ModelInfo", "ModelArgumentError", "UnknownModelError", "WeightsError", "ZOO_PREFIX", "build_for_input", "build_from_spec", "check_input_size", "input_kwargs",
    "count_parameters", "has_conv2d", "create_model", "list_models", "load_state_dict_file", "model_entrypoint", "model_info",
    "model_spec", "read_state_dict", "register_model",
    "TRANSFER_HEADS", "EvalBatchNorm1d", "EvalBatchNorm2d", "EvalBatchNorm3d", "TransferError", "adapt_input_channels",
    "default_head", "freeze", "head_module", "replace_head", "transfer", "transfer_blocks",
]
