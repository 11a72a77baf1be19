"""The lecture's math from first principles, in NumPy: correlation and convolution (1D/2D/3D, stride,
padding forms and modes, dilation, groups), pooling, output-size arithmetic and the explicit
backward passes, verified against PyTorch; autograd wrappers to train on them; a step-by-step trace
and its animation, with the rules of which options go with which op (``options``); memory limits that
refuse a request from its shapes before anything is allocated.

Depends on numpy only, except ``autograd`` (torch) and ``animation`` (matplotlib), which are imported
on first use.
"""

import importlib

from cnnlab.ops._args import PADDING_MODES, OpArgumentError
from cnnlab.ops.conv import (conv1d, conv1d_backward, conv2d, conv2d_backward, conv3d, conv3d_backward, conv_nd,
                             conv_nd_backward, convolve, convolve1d, convolve2d, convolve3d, correlate,
                             correlate1d, correlate2d, correlate3d)
from cnnlab.ops.limits import MEMORY_LIMIT, MemoryLimitError
from cnnlab.ops.options import ConvSetup, OptionsError, conv_options, conv_setup, parse_ints, parse_padding
from cnnlab.ops.pad import pad, pad_backward
from cnnlab.ops.pool import (avg_pool2d, avg_pool2d_backward, global_avg_pool2d, global_max_pool2d, max_pool2d,
                             max_pool2d_backward)
from cnnlab.ops.sizes import conv_output_size, conv_transpose_output_size, pool_output_size
from cnnlab.ops.steps import OPS, Step, Trace, check_trace2d, trace2d

_LAZY = {
    "reference_conv2d": "autograd", "reference_max_pool2d": "autograd", "reference_avg_pool2d": "autograd",
    "ReferenceConv2d": "autograd", "ReferenceMaxPool2d": "autograd", "ReferenceAvgPool2d": "autograd",
    "to_reference": "autograd", "animate": "animation", "animation_bytes": "animation",
    "AnimationPathError": "animation",
}

__all__ = [
    "PADDING_MODES", "OPS", "OpArgumentError", "pad", "pad_backward",
    "correlate", "convolve", "correlate1d", "correlate2d", "correlate3d", "convolve1d", "convolve2d", "convolve3d",
    "conv1d", "conv2d", "conv3d", "conv_nd", "conv1d_backward", "conv2d_backward", "conv3d_backward",
    "conv_nd_backward", "max_pool2d", "avg_pool2d", "max_pool2d_backward", "avg_pool2d_backward",
    "global_avg_pool2d", "global_max_pool2d", "conv_output_size", "pool_output_size",
    "conv_transpose_output_size", "Step", "Trace", "trace2d", "check_trace2d", "MEMORY_LIMIT", "MemoryLimitError",
    "ConvSetup", "OptionsError", "conv_options", "conv_setup", "parse_ints", "parse_padding",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"cnnlab.ops.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'cnnlab.ops' has no attribute {name!r}")
