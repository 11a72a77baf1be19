"""Binary-weight and XNOR layers (Rastegari et al. 2016, "XNOR-Net: ImageNet Classification Using Binary
Convolutional Neural Networks", arXiv:1603.05279).

:class:`BinaryConv2d` and :class:`BinaryLinear` are thin subclasses of ``nn.Conv2d`` and ``nn.Linear``
that keep a float *latent* weight ``W`` (the one an optimizer trains and a state dict saves) and compute
with its binarization, recomputed at every call:

- ``mode="bwn"`` (Binary-Weight-Network): ``W_b = alpha * sign(W)``, ``alpha`` the mean of ``|W|`` over
  each output channel's weights (the paper's optimal scale for a fixed ``sign(W)``, its eq. 4); the input
  stays float, so the layer is the dense convolution with ``W_b``.
- ``mode="xnor"``: the weights as in BWN, and the input binarized too: ``y = (sign(x) * W_b) . K + b``.
  ``K`` is the paper's input scale (section 3.2): ``A``, the mean of ``|x|`` over the input channels at
  each position, convolved with a ``kh x kw`` box filter of weight ``1 / (kh * kw)`` at the layer's
  stride, padding and dilation; so each output position is scaled by the mean ``|x|`` of the window it
  saw. For a grouped convolution ``A`` and ``K`` are taken per group (the channels a group's filters see;
  with one group this is the paper's ``K``). A linear layer's ``K`` is the mean ``|x|`` of each sample's
  input vector (the paper's ``beta`` for vectors). The binarized convolution runs as a float
  convolution of the +-1 values: the arithmetic of XNOR + popcount, not its speed.

``sign(0)`` is +1, for the weights and for the inputs, so that the binarization of a saved and reloaded
latent weight is the same to the bit. ``alpha`` is accumulated in float64 and rounded once to the
weight's dtype; so a weight that already is ``alpha * sign`` binarizes to itself exactly (the ``n``
partial sums of a value with a 24-bit mantissa are exact in float64): that is how a compressed model is
stored and rebuilt (:mod:`cnnlab.compress.binarize`).

Gradients (the straight-through estimator, Hubara et al. 2016, "Binarized Neural Networks",
arXiv:1602.02830): ``sign`` passes its output gradient to its input where ``|x| <= 1`` and zero
elsewhere, for the inputs and for the latent weights alike, as in XNOR-Net. ``alpha`` and ``K`` are
differentiated exactly (``d alpha / d W_i = sign(W_i) / n``), so the weight gradient is
``alpha * g * 1{|W| <= 1} + sign(W) * mean(g * sign(W))``, the paper's section 3.1 gradient with its
``1/n`` term written out exactly (the paper's own formula approximates it). Trained float weights lie
far inside [-1, 1] (fmnist-cnn's largest is 0.62), so for weights the clipping is there for fidelity, not
because it acts. The PyTorch port of XNOR-Net (jiecaoyu/XNOR-Net-PyTorch) also multiplies the weight
gradient by ``n (1 - 1/c)`` and mean-centres and clamps the latent weights at every step; neither is done
here: the factor is a per-layer learning-rate scale, which the AdamW cnnlab trains with divides out, and
centring would move the trained weights a post-training method starts from.

Cost: the weight is binarized at every call, also in inference. Measured (1 thread, busy 2-core EPYC,
min of 50 calls): 2.5 ms for fmnist-cnn's 512 x 3136 dense layer (1.4 ms with a float32 ``alpha``, which
is not exact), against 0.12 ms for that layer's product at batch 1; at batch 256 it is a few percent.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

__all__ = ["BINARY_MODES", "BinaryConv2d", "BinaryLinear", "binarize_weight", "sign_ste", "weight_scale"]

#: ``"bwn"``: binary weights, float inputs; ``"xnor"``: binary weights and binary inputs.
BINARY_MODES = ("bwn", "xnor")


def _check_mode(mode: str) -> str:
    if mode not in BINARY_MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, BINARY_MODES))}; got {mode!r}")
    return mode


class _SignSTE(torch.autograd.Function):
    """sign(x) in {-1, +1} with sign(0) = +1; backward: the straight-through estimator clipped at 1."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x.abs() <= 1)  # one byte per element instead of x itself
        # x + 0.0 turns -0.0 into +0.0, so both zeros give +1; one fused op, 3x faster than (x >= 0) * 2 - 1
        return torch.copysign(x.new_ones(()), x + 0.0)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (inside,) = ctx.saved_tensors
        return grad * inside


def sign_ste(x: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``x >= 0``, ``-1`` elsewhere (same dtype and layout as ``x``); the gradient passes
    through unchanged where ``|x| <= 1`` and is zero elsewhere (Hubara et al. 2016)."""
    return _SignSTE.apply(x)


def weight_scale(weight: torch.Tensor) -> torch.Tensor:
    """``alpha``: the mean ``|W|`` of each output channel (dim 0), shape ``(out,)``, accumulated in
    float64 and rounded once, so that ``weight_scale(alpha * sign) == alpha`` exactly. Differentiable."""
    per_channel = weight[0].numel()
    return weight.abs().flatten(1).sum(1, dtype=torch.float64).div(per_channel).to(weight.dtype)


def binarize_weight(weight: torch.Tensor) -> torch.Tensor:
    """``alpha * sign(W)`` per output channel (:func:`weight_scale`, :func:`sign_ste`); differentiable
    with the straight-through estimator. Idempotent to the bit."""
    alpha = weight_scale(weight)
    return sign_ste(weight) * alpha.view(-1, *([1] * (weight.dim() - 1)))


def _check_plain(module: nn.Module, base: type[nn.Module]) -> None:
    """``from_float`` copies weight and bias: refuse a subclass with its own forward or extra state."""
    state = {name for name, _ in module.named_parameters(recurse=False)} | {
        name for name, _ in module.named_buffers(recurse=False)}
    if not isinstance(module, base) or type(module).forward is not base.forward or state - {"weight", "bias"}:
        raise TypeError(f"{type(module).__name__} is not a plain {base.__name__} (its own forward or state "
                        f"{sorted(state - {'weight', 'bias'})}); binarizing only its weight would change it")


class _BinaryWeight:
    """``binary_weight()`` for both binary layers. Without gradients (evaluation, serving) the
    binarized weight is kept until the latent weight changes (its version counter, storage, dtype or
    device): re-binarizing fc1 of fmnist-cnn on every call cost 2.5 ms, 20x its batch-1 matrix product."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def _copy_from(self, module: nn.Module):
        with torch.no_grad():
            self.weight.copy_(module.weight)
            if module.bias is not None:
                self.bias.copy_(module.bias)
        return self

    def binary_weight(self) -> torch.Tensor:
        """The weight the layer computes with: ``alpha * sign(W)``."""
        w = self.weight
        if torch.is_grad_enabled() and w.requires_grad:
            return binarize_weight(w)
        key = (w.data_ptr(), w._version, w.dtype, w.device, w.stride(), torch.is_inference_mode_enabled())
        cached = self.__dict__.get("_binary_cache")
        if cached is None or cached[0] != key:
            cached = (key, binarize_weight(w.detach()))
            self.__dict__["_binary_cache"] = cached
        return cached[1]


class BinaryConv2d(_BinaryWeight, nn.Conv2d):
    """``nn.Conv2d`` computing with ``alpha * sign(W)`` (``mode="bwn"``) or, in addition, with
    ``sign(x)`` scaled by the paper's ``K`` (``mode="xnor"``); see the module docstring. Takes the
    arguments of ``nn.Conv2d`` plus ``mode``. The state dict is ``nn.Conv2d``'s (the latent weight)."""

    def __init__(self, *args: Any, mode: str = "bwn", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mode = _check_mode(mode)

    @classmethod
    def from_float(cls, module: nn.Conv2d, mode: str = "bwn") -> BinaryConv2d:
        """A binary layer with ``module``'s geometry, device, dtype and (copied) weight and bias.
        ``TypeError`` for a subclass of ``nn.Conv2d`` with its own forward or state (a masked conv)."""
        _check_plain(module, nn.Conv2d)
        layer = cls(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                    module.dilation, module.groups, module.bias is not None, module.padding_mode,
                    device=module.weight.device, dtype=module.weight.dtype, mode=mode)
        return layer._copy_from(module)

    def input_scale(self, x: torch.Tensor) -> torch.Tensor:
        """XNOR-Net's ``K`` for input ``x``: mean ``|x|`` over each group's channels, box-filtered over
        each output position's window; shaped ``(N, out_channels or 1, H_out, W_out)``."""
        a = x.abs()
        g = self.groups
        a = a.mean(-3, keepdim=True) if g == 1 else a.unflatten(-3, (g, a.shape[-3] // g)).mean(-3)
        kh, kw = self.kernel_size
        box = a.new_full((g, 1, kh, kw), 1.0 / (kh * kw))
        if self.padding_mode == "zeros":
            k = F.conv2d(a, box, None, self.stride, self.padding, self.dilation, g)
        else:
            k = F.conv2d(F.pad(a, self._reversed_padding_repeated_twice, mode=self.padding_mode), box, None,
                         self.stride, 0, self.dilation, g)
        return k if g == 1 else k.repeat_interleave(self.out_channels // g, dim=-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.binary_weight()
        if self.mode == "bwn":
            return self._conv_forward(x, weight, self.bias)
        y = self._conv_forward(sign_ste(x), weight, None) * self.input_scale(x)
        return y if self.bias is None else y + self.bias.view(-1, 1, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode!r}"


class BinaryLinear(_BinaryWeight, nn.Linear):
    """``nn.Linear`` computing with ``alpha * sign(W)`` (``mode="bwn"``) or, in addition, with
    ``sign(x)`` scaled by each sample's mean ``|x|`` (``mode="xnor"``). The state dict is ``nn.Linear``'s."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None, *, mode: str = "bwn") -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self.mode = _check_mode(mode)

    @classmethod
    def from_float(cls, module: nn.Linear, mode: str = "bwn") -> BinaryLinear:
        """A binary layer with ``module``'s shape, device, dtype and (copied) weight and bias.
        ``TypeError`` for a subclass of ``nn.Linear`` with its own forward or state."""
        _check_plain(module, nn.Linear)
        layer = cls(module.in_features, module.out_features, module.bias is not None,
                    device=module.weight.device, dtype=module.weight.dtype, mode=mode)
        return layer._copy_from(module)

    def input_scale(self, x: torch.Tensor) -> torch.Tensor:
        """XNOR-Net's scale of a binarized input vector: its mean ``|x|``, shaped ``(..., 1)``."""
        return x.abs().mean(-1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.binary_weight()
        if self.mode == "bwn":
            return F.linear(x, weight, self.bias)
        y = F.linear(sign_ste(x), weight) * self.input_scale(x)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode!r}"
