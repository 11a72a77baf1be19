"""Max and average pooling from first principles (NumPy), forward and backward, with PyTorch's
semantics (``F.max_pool2d``, ``F.avg_pool2d``): the stride defaults to the kernel size,
``padding <= kernel_size // 2``, and ``ceil_mode`` keeps a last partial window unless it would start
in the right padding."""

from __future__ import annotations

import itertools

import numpy as np

from cnnlab.ops._args import OpArgumentError, as_float_array, ntuple
from cnnlab.ops.conv import windows
from cnnlab.ops.sizes import pool_output_size

__all__ = ["max_pool2d", "avg_pool2d", "max_pool2d_backward", "avg_pool2d_backward", "global_avg_pool2d",
           "global_max_pool2d"]


def _setup(x, kernel_size, stride, padding, dilation, ceil_mode, n=2):
    x = as_float_array(x, "input")
    if x.ndim not in (n + 1, n + 2):
        raise OpArgumentError(f"input must have shape (N, C, H, W) or (C, H, W); got {x.shape}")
    kernel = ntuple(kernel_size, n, "kernel_size")
    stride = kernel if stride is None else ntuple(stride, n, "stride")
    padding = ntuple(padding, n, "padding", minimum=0)
    dilation = ntuple(dilation, n, "dilation")
    out = tuple(pool_output_size(size, k, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)
                for size, k, s, p, d in zip(x.shape[-n:], kernel, stride, padding, dilation))
    # enough padding after for every window, also a ceil_mode window that overhangs
    pads = tuple((p, max(0, (o - 1) * s + d * (k - 1) + 1 - size - p))
                 for size, k, s, p, d, o in zip(x.shape[-n:], kernel, stride, padding, dilation, out))
    return x, kernel, stride, padding, dilation, out, pads


def _padded(x, pads, fill):
    out = np.full(x.shape[:-len(pads)] + tuple(s + a + b for s, (a, b) in zip(x.shape[-len(pads):], pads)),
                  fill, dtype=x.dtype)
    out[(Ellipsis,) + tuple(slice(a, a + s) for s, (a, b) in zip(x.shape[-len(pads):], pads))] = x
    return out


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
               return_indices: bool = False):
    """Maximum over each window of (N, C, H, W) (or (C, H, W)); padding counts as ``-inf``.

    Which pixel is "the" maximum (the one ``indices`` name and the backward pass routes the gradient
    to) follows PyTorch's CPU kernel: the first pixel of the window in row-major order holding the
    maximum; if the window holds NaN, the output is NaN and the *last* NaN is chosen; a window whose
    real pixels are all ``-inf`` chooses its first real pixel, never the padding. With
    ``return_indices`` also returns the flat index ``h * W + w`` of the chosen input pixel
    (``F.max_pool2d(..., return_indices=True)``'s format; a window that covers no input pixel at
    all, possible with dilation, gets PyTorch's out-of-range index and output ``-inf``).
    """
    x, kernel, stride, padding, dilation, out, pads = _setup(x, kernel_size, stride, padding, dilation, ceil_mode)
    xp = _padded(x, pads, -np.inf)
    win = windows(xp, kernel, stride, dilation)  # (..., OH, OW, kH, kW)
    flat = win.reshape(win.shape[:-2] + (-1,))
    y = flat.max(axis=-1)  # NaN-propagating
    if not return_indices:
        return y
    # per axis: the input position each (output, kernel offset) reads, and whether it is a real pixel
    pos = [np.arange(o)[:, None] * s - p + np.arange(k)[None, :] * d
           for o, k, s, p, d in zip(out, kernel, stride, padding, dilation)]
    real = [(q >= 0) & (q < size) for q, size in zip(pos, x.shape[-2:])]
    real = (real[0][:, None, :, None] & real[1][None, :, None, :]).reshape(out + (-1,))
    K = flat.shape[-1]
    candidates = real & (flat == y[..., None])
    nan = np.isnan(flat)
    k = np.where(nan.any(axis=-1), K - 1 - np.argmax(nan[..., ::-1], axis=-1), np.argmax(candidates, axis=-1))
    kh, kw = np.unravel_index(k, kernel)
    # a window with no real pixel: PyTorch's index of the first dilated position at or after 0
    none = ~(candidates.any(axis=-1) | nan.any(axis=-1))
    first = [-(-np.maximum(0, p - np.arange(o) * s) // d) for o, s, p, d in zip(out, stride, padding, dilation)]
    kh = np.where(none, first[0][:, None], kh)
    kw = np.where(none, first[1][None, :], kw)
    h = np.arange(out[0])[:, None] * stride[0] - padding[0] + kh * dilation[0]
    w = np.arange(out[1])[None, :] * stride[1] - padding[1] + kw * dilation[1]
    return y, (h * x.shape[-1] + w).astype(np.int64)


def max_pool2d_backward(grad_out, indices, input_shape) -> np.ndarray:
    """Gradient of :func:`max_pool2d`: each output's gradient flows to its argmax pixel only
    (``indices`` from ``return_indices=True``); pixels chosen by several windows sum their gradients.

    Max is not differentiable at ties; this is the convention the lecture calls "just a convention
    that works": the pixel that won the forward tie-break takes all of it. An index outside the
    input plane (a window that covered only padding) passes no gradient, as in PyTorch.
    """
    g = as_float_array(grad_out, "grad_out")
    indices = np.asarray(indices)
    if indices.shape != g.shape:
        raise OpArgumentError(f"indices must have grad_out's shape {g.shape}; got {indices.shape}")
    if not np.issubdtype(indices.dtype, np.integer):
        raise OpArgumentError(f"indices must be integers (from max_pool2d(..., return_indices=True)); got {indices.dtype}")
    input_shape = tuple(input_shape)
    plane = input_shape[-1] * input_shape[-2]
    rows = int(np.prod(input_shape[:-2], dtype=np.int64))
    idx = indices.reshape(rows, -1)
    inside = (idx >= 0) & (idx < plane)
    linear = (np.arange(rows).reshape(-1, 1) * plane + idx)[inside]
    grad = np.bincount(linear, weights=g.reshape(rows, -1)[inside], minlength=rows * plane)
    return grad.astype(g.dtype, copy=False).reshape(input_shape)


def _avg_divisor(x_shape, kernel, stride, padding, out, count_include_pad, divisor_override, dtype):
    if divisor_override is not None:
        (d,) = ntuple(divisor_override, 1, "divisor_override")
        return np.asarray(d, dtype=dtype)
    divisor = np.ones((), dtype=dtype)
    for axis, (size, k, s, p, o) in enumerate(zip(x_shape[-2:], kernel, stride, padding, out)):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)  # a window never counts beyond the padding
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, size)
        count = (end - start).astype(dtype)
        divisor = divisor[..., None] * count if axis else count
    return divisor


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> np.ndarray:
    """Mean over each window of (N, C, H, W) (or (C, H, W)), zero padding.

    The divisor is the window's size counting padding (``count_include_pad``, PyTorch's default) or
    only real pixels; a ``ceil_mode`` window that overhangs the padding divides by what it covers.
    """
    x, kernel, stride, padding, _, out, pads = _setup(x, kernel_size, stride, padding, 1, ceil_mode)
    xp = _padded(x, pads, 0.0)
    total = windows(xp, kernel, stride, (1, 1)).sum(axis=(-2, -1))
    return total / _avg_divisor(x.shape, kernel, stride, padding, out, count_include_pad, divisor_override, x.dtype)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                        count_include_pad: bool = True, divisor_override: int | None = None) -> np.ndarray:
    """Gradient of :func:`avg_pool2d`: an output averaged ``Q`` pixels, so ``1/Q`` of its gradient
    flows back to each of them (one vectorised scatter per kernel offset, not per pixel)."""
    g = as_float_array(grad_out, "grad_out")
    x = np.empty(tuple(input_shape), dtype=g.dtype)
    x, kernel, stride, padding, _, out, pads = _setup(x, kernel_size, stride, padding, 1, ceil_mode)
    if g.shape != x.shape[:-2] + out:
        raise OpArgumentError(f"grad_out must have the output's shape {x.shape[:-2] + out}; got {g.shape}")
    g = g / _avg_divisor(x.shape, kernel, stride, padding, out, count_include_pad, divisor_override, g.dtype)
    grad = np.zeros(x.shape[:-2] + tuple(s + a + b for s, (a, b) in zip(x.shape[-2:], pads)), dtype=g.dtype)
    for dh, dw in itertools.product(range(kernel[0]), range(kernel[1])):
        grad[..., dh:dh + (out[0] - 1) * stride[0] + 1:stride[0], dw:dw + (out[1] - 1) * stride[1] + 1:stride[1]] += g
    return grad[..., pads[0][0]:pads[0][0] + x.shape[-2], pads[1][0]:pads[1][0] + x.shape[-1]]


def global_avg_pool2d(x, keepdims: bool = True) -> np.ndarray:
    """Mean over H and W: (N, C, 1, 1) like ``nn.AdaptiveAvgPool2d(1)`` (``keepdims=False``: (N, C),
    like Keras' ``GlobalAveragePooling2D``)."""
    x = as_float_array(x, "input")
    if x.ndim < 3:
        raise OpArgumentError(f"input must have shape (N, C, H, W) or (C, H, W); got {x.shape}")
    return x.mean(axis=(-2, -1), keepdims=keepdims)


def global_max_pool2d(x, keepdims: bool = True) -> np.ndarray:
    """Maximum over H and W: (N, C, 1, 1) like ``nn.AdaptiveMaxPool2d(1)`` (``keepdims=False``: (N, C))."""
    x = as_float_array(x, "input")
    if x.ndim < 3:
        raise OpArgumentError(f"input must have shape (N, C, H, W) or (C, H, W); got {x.shape}")
    return x.max(axis=(-2, -1), keepdims=keepdims)
