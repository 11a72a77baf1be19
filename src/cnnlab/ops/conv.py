"""Correlation and convolution from first principles (NumPy), forward and backward.

Deep learning's "convolution" is the lecture's *correlation*,
``y[i, j] = sum_{m, n} K[m, n] x[i + m, j + n]``; true convolution flips the kernel,
``y[i, j] = sum_{m, n} x[m, n] h[i - m, j - n]``. :func:`conv2d` has the semantics of
``torch.nn.functional.conv2d`` (a correlation, summed over input channels, per group) and more
padding forms and modes.

Vectorised as im2col: the padded input's windows (a strided view, no copy) are gathered once into a
``(positions, C/groups * kernel)`` matrix and multiplied by the ``(kernel, O/groups)`` weight matrix:
one BLAS matmul per group. No Python loop runs over pixels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from cnnlab.ops._args import OpArgumentError, as_float_array, check_mode, ntuple, padding_pairs
from cnnlab.ops.pad import pad, pad_backward

__all__ = [
    "correlate", "convolve", "correlate1d", "correlate2d", "correlate3d", "convolve1d", "convolve2d",
    "convolve3d", "conv1d", "conv2d", "conv3d", "conv_nd", "conv1d_backward", "conv2d_backward",
    "conv3d_backward", "conv_nd_backward", "windows", "resolve_padding",
]

_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}
_KERNEL = {1: "kL", 2: "kH, kW", 3: "kD, kH, kW"}


def windows(xp: np.ndarray, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int]) -> np.ndarray:
    """Every window of the (already padded) ``xp`` (N, C, *S) as a strided view (N, C, *out, *kernel).

    ``view[..., o..., k...] = xp[..., o * stride + k * dilation]``: no data is copied.
    """
    n = len(kernel)
    eff = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    v = sliding_window_view(xp, eff, axis=tuple(range(xp.ndim - n, xp.ndim)))
    return v[(Ellipsis,) + tuple(slice(None, None, s) for s in stride) + tuple(slice(None, None, d) for d in dilation)]


def resolve_padding(padding, n: int, *, kernel, stride, dilation, sizes) -> tuple[tuple[int, int], ...]:
    """The ``(before, after)`` pairs for ``padding`` in any accepted form (see ``padding_pairs``)."""
    return padding_pairs(padding, n, kernel, dilation, stride, sizes)


def _prepare(x, w, b, n, stride, padding, dilation, groups, padding_mode):
    x = as_float_array(x, "input")
    w = as_float_array(w, "weight")
    batched = x.ndim == n + 2
    if x.ndim not in (n + 1, n + 2):
        raise OpArgumentError(f"input must have shape (N, C, {_SPATIAL[n]}) or (C, {_SPATIAL[n]}); got {x.shape}")
    if w.ndim != n + 2:
        raise OpArgumentError(f"weight must have shape (O, C/groups, {_KERNEL[n]}); got {w.shape}")
    if not batched:
        x = x[None]
    (groups,) = ntuple(groups, 1, "groups")
    stride = ntuple(stride, n, "stride")
    dilation = ntuple(dilation, n, "dilation")
    check_mode(padding_mode)
    C, O = x.shape[1], w.shape[0]
    if C % groups or O % groups:
        raise OpArgumentError(f"groups={groups} must divide both the input channels ({C}) and the output channels ({O})")
    if w.shape[1] * groups != C:
        raise OpArgumentError(f"input has {C} channels but weight expects {w.shape[1] * groups} "
                              f"(weight.shape[1]={w.shape[1]} x groups={groups})")
    kernel = w.shape[2:]
    if min(kernel, default=1) < 1:
        raise OpArgumentError(f"weight has an empty kernel: {w.shape}")
    pads = padding_pairs(padding, n, kernel, dilation, stride, x.shape[2:])
    for axis, (size, (p0, p1), k, d) in enumerate(zip(x.shape[2:], pads, kernel, dilation)):
        eff = d * (k - 1) + 1
        if eff > size + p0 + p1:
            raise OpArgumentError(f"kernel size {k} (dilation {d}: spans {eff}) in dimension {axis} is larger than "
                                  f"the padded input ({size} + {p0} + {p1} = {size + p0 + p1}); it must be at most "
                                  f"{size + p0 + p1}")
    if b is not None:
        b = as_float_array(b, "bias")
        if b.shape != (O,):
            raise OpArgumentError(f"bias must have shape ({O},) (one per output channel); got {b.shape}")
    dtype = np.result_type(x.dtype, w.dtype, *(() if b is None else (b.dtype,)))
    return x.astype(dtype, copy=False), w.astype(dtype, copy=False), b, batched, stride, pads, dilation, groups


def _im2col(xp, kernel, stride, dilation, groups):
    """The windows as a (groups, C/groups * prod(kernel), N * prod(out)) matrix, and the output shape.

    Channels-first ("columns") layout: each row is one (channel, kernel offset) and holds that
    input channel shifted by the offset, so the one copy moves whole image rows.
    """
    n = len(kernel)
    win = windows(xp, kernel, stride, dilation)  # (N, C, *out, *kernel)
    N, C = win.shape[:2]
    out = win.shape[2:2 + n]
    win = win.reshape(N, groups, C // groups, *out, *kernel)
    # -> (groups, C/groups, *kernel, N, *out)
    order = (1, 2) + tuple(range(3 + n, 3 + 2 * n)) + (0,) + tuple(range(3, 3 + n))
    cols = np.ascontiguousarray(win.transpose(order)).reshape(groups, (C // groups) * int(np.prod(kernel)), -1)
    return cols, out


def conv_nd(x, w, b=None, stride=1, padding=0, dilation=1, groups: int = 1, *, padding_mode: str = "zeros",
            value: float = 0.0) -> np.ndarray:
    """N-dimensional correlation layer; the number of spatial dimensions is ``w.ndim - 2``.

    Args:
        x: input, (N, C, *S) or unbatched (C, *S).
        w: weight, (O, C / groups, *K).
        b: bias, (O,), or None.
        stride, dilation: an int or one per spatial dimension (>= 1).
        padding: an int, one int per dimension, ``(before, after)`` per dimension flattened
            (2D: ``(top, bottom, left, right)``), or ``"valid"``, ``"same"``, ``"full"``.
        groups: channels are split into this many independent groups (``groups == C``: depthwise).
        padding_mode: ``zeros``, ``constant`` (with ``value``), ``reflect``, ``replicate``, ``circular``.

    Returns:
        (N, O, *out) (or (O, *out) for unbatched input), ``out = floor((S + pads - d(K - 1) - 1) / s) + 1``.
        Integer inputs are computed in float64.
    """
    n = np.ndim(w) - 2
    if n < 1:
        raise OpArgumentError(f"weight must have shape (O, C/groups, *kernel); got {np.shape(w)}")
    x, w, b, batched, stride, pads, dilation, groups = _prepare(x, w, b, n, stride, padding, dilation, groups,
                                                                padding_mode)
    xp = pad(x, pads, padding_mode, value)
    cols, out = _im2col(xp, w.shape[2:], stride, dilation, groups)
    O = w.shape[0]
    y = np.matmul(w.reshape(groups, O // groups, -1), cols)  # (groups, O/groups, N * prod(out))
    y = np.ascontiguousarray(y.reshape(O, x.shape[0], *out).swapaxes(0, 1))
    if b is not None:
        y = y + b.reshape((1, O) + (1,) * n).astype(y.dtype, copy=False)
    return y if batched else y[0]


def conv_nd_backward(x, w, grad_out, stride=1, padding=0, dilation=1, groups: int = 1, *,
                     padding_mode: str = "zeros", value: float = 0.0, bias: bool = True):
    """Gradients of :func:`conv_nd` with respect to input, weight and bias, as the lecture derives them.

    * ``grad_b[o] = sum of grad_out[:, o]``.
    * ``grad_w[o, c] = correlation of the padded input channel c with grad_out[:, o]`` (the same
      windows as the forward pass, weighted by the output gradient).
    * ``grad_x``: the forward pass read ``x[i' * s + m * d]`` with weight ``h[m]``, so
      ``dC/dx[i] = sum_m h[m] * delta_y[(i - m * d) / s]``: a *full* correlation of ``grad_out``
      with the *flipped* kernels (channels transposed, per group). A stride ``s > 1`` is handled by
      dilating ``grad_out`` (``s - 1`` zeros between entries), dilation by correlating with the same
      dilation, and the padding by its adjoint (cropped for zeros/constant; added back to the copied
      pixels for reflect/replicate/circular).

    Returns ``(grad_x, grad_w, grad_b)``; ``grad_b`` is None when ``bias`` is False.
    """
    n = np.ndim(w) - 2
    x, w, _, batched, stride, pads, dilation, groups = _prepare(x, w, None, n, stride, padding, dilation, groups,
                                                                padding_mode)
    go = as_float_array(grad_out, "grad_out").astype(x.dtype, copy=False)
    if not batched:
        go = go[None]
    N, O = x.shape[0], w.shape[0]
    kernel = w.shape[2:]
    xp = pad(x, pads, padding_mode, value)
    cols, out = _im2col(xp, kernel, stride, dilation, groups)
    if go.shape != (N, O, *out):
        raise OpArgumentError(f"grad_out must have the output's shape {(N, O, *out)}; got {go.shape}")

    grad_b = go.sum(axis=(0,) + tuple(range(2, 2 + n))) if bias else None

    # (groups, O/groups, N * prod(out)) @ (groups, N * prod(out), C/groups * prod(kernel))
    g = np.ascontiguousarray(go.swapaxes(0, 1)).reshape(groups, O // groups, -1)
    grad_w = np.matmul(g, cols.transpose(0, 2, 1)).reshape(w.shape)

    # dilate grad_out by the stride, pad it "full" (plus the rows the forward windows never reached)
    dilated = np.zeros((N, O) + tuple((o - 1) * s + 1 for o, s in zip(out, stride)), dtype=go.dtype)
    dilated[(Ellipsis,) + tuple(slice(None, None, s) for s in stride)] = go
    full = []
    for size_p, o, s, k, d in zip(xp.shape[2:], out, stride, kernel, dilation):
        eff = d * (k - 1) + 1
        tail = size_p - ((o - 1) * s + eff)
        full.append((eff - 1, eff - 1 + tail))
    # flipped kernels, input and output channels exchanged within each group: (C, O/groups, *K)
    Cg = w.shape[1]
    wt = w.reshape(groups, O // groups, Cg, *kernel).swapaxes(1, 2).reshape(groups * Cg, O // groups, *kernel)
    wt = np.flip(wt, axis=tuple(range(2, 2 + n)))
    grad_xp = conv_nd(dilated, wt, None, 1, [p for pair in full for p in pair], dilation, groups)
    grad_x = pad_backward(grad_xp, pads, padding_mode, x.shape)
    if not batched:
        grad_x = grad_x[0]
    return grad_x, grad_w, grad_b


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros", value=0.0):
    """``F.conv1d`` semantics: x (N, C, L), w (O, C/groups, K). See :func:`conv_nd`."""
    _check_dims(w, 1)
    return conv_nd(x, w, b, stride, padding, dilation, groups, padding_mode=padding_mode, value=value)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros", value=0.0):
    """``F.conv2d`` semantics: x (N, C, H, W), w (O, C/groups, kH, kW). See :func:`conv_nd`."""
    _check_dims(w, 2)
    return conv_nd(x, w, b, stride, padding, dilation, groups, padding_mode=padding_mode, value=value)


def conv3d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros", value=0.0):
    """``F.conv3d`` semantics: x (N, C, D, H, W), w (O, C/groups, kD, kH, kW). See :func:`conv_nd`."""
    _check_dims(w, 3)
    return conv_nd(x, w, b, stride, padding, dilation, groups, padding_mode=padding_mode, value=value)


def conv1d_backward(x, w, grad_out, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
                    value=0.0, bias=True):
    """(grad_x, grad_w, grad_b) of :func:`conv1d`; see :func:`conv_nd_backward`."""
    _check_dims(w, 1)
    return conv_nd_backward(x, w, grad_out, stride, padding, dilation, groups, padding_mode=padding_mode, value=value,
                            bias=bias)


def conv2d_backward(x, w, grad_out, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
                    value=0.0, bias=True):
    """(grad_x, grad_w, grad_b) of :func:`conv2d`; see :func:`conv_nd_backward`."""
    _check_dims(w, 2)
    return conv_nd_backward(x, w, grad_out, stride, padding, dilation, groups, padding_mode=padding_mode, value=value,
                            bias=bias)


def conv3d_backward(x, w, grad_out, stride=1, padding=0, dilation=1, groups=1, *, padding_mode="zeros",
                    value=0.0, bias=True):
    """(grad_x, grad_w, grad_b) of :func:`conv3d`; see :func:`conv_nd_backward`."""
    _check_dims(w, 3)
    return conv_nd_backward(x, w, grad_out, stride, padding, dilation, groups, padding_mode=padding_mode, value=value,
                            bias=bias)


def _check_dims(w, n: int) -> None:
    if np.ndim(w) != n + 2:
        raise OpArgumentError(f"weight must have shape (O, C/groups, {_KERNEL[n]}) for a {n}D convolution; "
                              f"got {np.shape(w)}")


# --- single-channel arrays: the lecture's two definitions -------------------------------------

def correlate(x, k, *, stride=1, padding=0, dilation=1, padding_mode="zeros", value=0.0) -> np.ndarray:
    """``y[i] = sum_m k[m] x[i * stride + m * dilation]`` on a single-channel array of any rank
    (``x.ndim == k.ndim``); deep learning calls this convolution."""
    x = as_float_array(x, "input")
    k = as_float_array(k, "kernel")
    if x.ndim != k.ndim or x.ndim < 1:
        raise OpArgumentError(f"input and kernel must have the same number of dimensions; got {x.shape} and {k.shape}")
    return conv_nd(x[None, None], k[None, None], None, stride, padding, dilation, 1, padding_mode=padding_mode,
                   value=value)[0, 0]


def convolve(x, k, *, stride=1, padding=0, dilation=1, padding_mode="zeros", value=0.0) -> np.ndarray:
    """True convolution ``y[i] = sum_m x[m] h[i - m]``: correlation with the kernel flipped along every
    axis. With ``padding="full"`` this is ``numpy.convolve``'s (and ``scipy.signal.convolve``'s)
    default "full" output; with ``padding=0`` their "valid" output."""
    k = as_float_array(k, "kernel")
    return correlate(x, np.flip(k), stride=stride, padding=padding, dilation=dilation, padding_mode=padding_mode,
                     value=value)


def _ranked(fn, n: int, what: str, noun: str):
    def wrapped(x, k, *, stride=1, padding=0, dilation=1, padding_mode="zeros", value=0.0):
        x, k = as_float_array(x, "input"), as_float_array(k, "kernel")
        if x.ndim != n or k.ndim != n:
            raise OpArgumentError(f"{what}{n}d needs {n}-dimensional input and kernel; got shapes "
                                  f"{x.shape} and {k.shape}")
        return fn(x, k, stride=stride, padding=padding, dilation=dilation, padding_mode=padding_mode, value=value)

    wrapped.__name__ = wrapped.__qualname__ = f"{what}{n}d"
    wrapped.__doc__ = f"{n}D single-channel {noun} (input and kernel both {n}-dimensional); see :func:`{what}`."
    return wrapped


correlate1d = _ranked(correlate, 1, "correlate", "correlation")
correlate2d = _ranked(correlate, 2, "correlate", "correlation")
correlate3d = _ranked(correlate, 3, "correlate", "correlation")
convolve1d = _ranked(convolve, 1, "convolve", "convolution")
convolve2d = _ranked(convolve, 2, "convolve", "convolution")
convolve3d = _ranked(convolve, 3, "convolve", "convolution")
