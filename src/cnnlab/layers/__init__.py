"""Layers that PyTorch lacks or that cnnlab makes faster (measured)."""

from cnnlab.layers.binary import BINARY_MODES, BinaryConv2d, BinaryLinear, binarize_weight, sign_ste, weight_scale
from cnnlab.layers.dropout import Dropout, dropout_mask_bytes
from cnnlab.layers.efficient import (
    ChannelShuffle,
    DepthwiseConv2d,
    DepthwiseSeparableConv2d,
    GroupedConv2d,
    PointwiseConv2d,
    ShuffleUnit,
    channel_shuffle,
)
from cnnlab.layers.sparse import PredefinedSparseConv2d, sparse_pattern

__all__ = ["BINARY_MODES", "BinaryConv2d", "BinaryLinear", "ChannelShuffle", "DepthwiseConv2d",
           "DepthwiseSeparableConv2d", "Dropout", "GroupedConv2d", "PointwiseConv2d", "PredefinedSparseConv2d",
           "ShuffleUnit", "binarize_weight", "channel_shuffle", "dropout_mask_bytes", "sign_ste", "sparse_pattern",
           "weight_scale"]
