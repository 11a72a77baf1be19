"""PyTorch autograd on the reference math: ``torch.autograd.Function``s whose forward and backward
call the NumPy ops, and drop-in modules, so a small CNN can be trained on the lecture's equations.

The tensors go through NumPy on the CPU (and come back to the input's device and dtype); this is for
verifying and teaching, not for speed (see bench/RESULTS.md for how far it is from ``F.conv2d``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from cnnlab.ops._args import OpArgumentError
from cnnlab.ops.conv import conv_nd, conv_nd_backward
from cnnlab.ops.pool import avg_pool2d, avg_pool2d_backward, max_pool2d, max_pool2d_backward

__all__ = ["reference_conv2d", "reference_max_pool2d", "reference_avg_pool2d", "ReferenceConv2d",
           "ReferenceMaxPool2d", "ReferenceAvgPool2d", "to_reference"]


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy()


def _torch(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=like.device, dtype=like.dtype)


class _ConvFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups, padding_mode, value):
        ctx.args = (stride, padding, dilation, groups)
        ctx.modes = {"padding_mode": padding_mode, "value": value}
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _torch(conv_nd(_np(x), _np(weight), _np(bias), *ctx.args, **ctx.modes), x)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        gx, gw, gb = conv_nd_backward(_np(x), _np(weight), _np(grad_out), *ctx.args, **ctx.modes, bias=ctx.has_bias)
        need = ctx.needs_input_grad
        return (_torch(gx, x) if need[0] else None, _torch(gw, weight) if need[1] else None,
                _torch(gb, weight) if ctx.has_bias and need[2] else None, None, None, None, None, None, None)


class _MaxPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode):
        y, idx = max_pool2d(_np(x), kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
        ctx.idx, ctx.shape = idx, tuple(x.shape)
        return _torch(y, x)

    @staticmethod
    def backward(ctx, grad_out):
        return (_torch(max_pool2d_backward(_np(grad_out), ctx.idx, ctx.shape), grad_out),
                None, None, None, None, None)


class _AvgPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
        ctx.args = (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        ctx.shape = tuple(x.shape)
        return _torch(avg_pool2d(_np(x), *ctx.args), x)

    @staticmethod
    def backward(ctx, grad_out):
        return (_torch(avg_pool2d_backward(_np(grad_out), ctx.shape, *ctx.args), grad_out),
                None, None, None, None, None, None)


def reference_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                     padding=0, dilation=1, groups: int = 1, *, padding_mode: str = "zeros",
                     value: float = 0.0) -> torch.Tensor:
    """``F.conv2d`` computed by :func:`cnnlab.ops.conv2d`; differentiable through
    :func:`cnnlab.ops.conv2d_backward`."""
    if weight.dim() != 4:
        raise OpArgumentError(f"weight must have shape (O, C/groups, kH, kW); got {tuple(weight.shape)}")
    return _ConvFunction.apply(x, weight, bias, stride, padding, dilation, groups, padding_mode, value)


def reference_max_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1,
                         ceil_mode: bool = False) -> torch.Tensor:
    """``F.max_pool2d`` computed by :func:`cnnlab.ops.max_pool2d`; differentiable through
    :func:`cnnlab.ops.max_pool2d_backward`."""
    return _MaxPoolFunction.apply(x, kernel_size, stride, padding, dilation, ceil_mode)


def reference_avg_pool2d(x: torch.Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                         count_include_pad: bool = True, divisor_override: int | None = None) -> torch.Tensor:
    """``F.avg_pool2d`` computed by :func:`cnnlab.ops.avg_pool2d`; differentiable through
    :func:`cnnlab.ops.avg_pool2d_backward`."""
    return _AvgPoolFunction.apply(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


class ReferenceConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same constructor, parameters and state dict) whose forward and backward run the
    reference NumPy math."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding = self.padding if isinstance(self.padding, str) else tuple(self.padding)
        return reference_conv2d(x, self.weight, self.bias, tuple(self.stride), padding, tuple(self.dilation),
                                self.groups, padding_mode=self.padding_mode)


class ReferenceMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` on the reference math (``return_indices`` is not supported)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.return_indices:
            raise OpArgumentError("ReferenceMaxPool2d does not return indices; use cnnlab.ops.max_pool2d")
        return reference_max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)


class ReferenceAvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` on the reference math."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference_avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                    self.count_include_pad, self.divisor_override)


_SWAPS = {nn.Conv2d: ReferenceConv2d, nn.MaxPool2d: ReferenceMaxPool2d, nn.AvgPool2d: ReferenceAvgPool2d}


def to_reference(model: nn.Module) -> nn.Module:
    """Make every ``nn.Conv2d``, ``nn.MaxPool2d`` and ``nn.AvgPool2d`` in ``model`` (in place) run on the
    reference math; parameters are shared, not copied. Returns ``model``."""
    for module in model.modules():
        for name, child in module.named_children():
            cls = _SWAPS.get(type(child))
            if cls is not None:
                child.__class__ = cls
    return model
