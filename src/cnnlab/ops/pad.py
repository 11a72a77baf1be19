"""Padding (zeros, constant, reflect, replicate, circular) and its adjoint, for any number of
spatial dimensions.

Each mode is an index map per spatial axis: padded position ``j`` (from ``-before`` to
``size + after - 1``) reads input position ``src[j]``, or the constant when ``src[j] = -1``. Padding
is a gather along each axis; its backward pass is the matching scatter-add, so a gradient that
reached a reflected or wrapped copy of a pixel flows back to that pixel.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cnnlab.ops._args import OpArgumentError, check_mode

__all__ = ["pad", "pad_backward", "source_index"]


def source_index(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """For each padded position along one axis, the input position it copies (``-1``: the constant).

    Matches ``torch.nn.functional.pad``: reflect mirrors without repeating the edge
    (``[2 1 | 0 1 2 3 | 2 1]``) and needs ``pad < size``; replicate repeats the edge; circular wraps
    and needs ``pad <= size``.
    """
    check_mode(mode)
    j = np.arange(-before, size + after)
    if mode in ("zeros", "constant"):
        return np.where((j >= 0) & (j < size), j, -1)
    if mode == "reflect":
        if before >= size or after >= size:
            raise OpArgumentError(f"padding ({before}, {after}) with padding_mode='reflect' must be smaller than "
                                  f"the input size {size} in that dimension")
        j = np.abs(j)
        return np.where(j >= size, 2 * (size - 1) - j, j)
    if mode == "replicate":
        return np.clip(j, 0, size - 1)
    if before > size or after > size:
        raise OpArgumentError(f"padding ({before}, {after}) with padding_mode='circular' must be at most "
                              f"the input size {size} in that dimension")
    return j % size


def pad(x: np.ndarray, pads: Sequence[tuple[int, int]], mode: str = "zeros", value: float = 0.0) -> np.ndarray:
    """Pad the last ``len(pads)`` axes of ``x``; ``pads[i] = (before, after)`` for the i-th of them.

    ``mode="zeros"`` is ``"constant"`` with ``value=0``.
    """
    check_mode(mode)
    x = np.asarray(x)
    if not any(b or a for b, a in pads):
        return x
    first = x.ndim - len(pads)
    fill = 0.0 if mode == "zeros" else value
    if mode in ("zeros", "constant"):
        out = np.full(x.shape[:first] + tuple(s + b + a for s, (b, a) in zip(x.shape[first:], pads)),
                      fill, dtype=x.dtype)
        out[(Ellipsis,) + tuple(slice(b, b + s) for s, (b, a) in zip(x.shape[first:], pads))] = x
        return out
    for axis, (b, a) in enumerate(pads, start=first):
        x = np.take(x, source_index(x.shape[axis], b, a, mode), axis=axis)
    return x


def pad_backward(grad: np.ndarray, pads: Sequence[tuple[int, int]], mode: str,
                 input_shape: Sequence[int]) -> np.ndarray:
    """The adjoint of :func:`pad`: the gradient with respect to the unpadded input.

    Constant padding drops the gradient that reached the padding; the other modes add it to the
    input positions the padding copied.
    """
    check_mode(mode)
    first = grad.ndim - len(pads)
    if mode in ("zeros", "constant"):
        return grad[(Ellipsis,) + tuple(slice(b, b + s) for s, (b, a) in zip(input_shape[first:], pads))]
    for axis, (b, a) in enumerate(pads, start=first):
        size = input_shape[axis]
        if not (b or a):
            continue
        src = source_index(size, b, a, mode)
        moved = np.moveaxis(grad, axis, 0)
        out = np.zeros((size,) + moved.shape[1:], dtype=grad.dtype)
        np.add.at(out, src, moved)
        grad = np.moveaxis(out, 0, axis)
    return grad
