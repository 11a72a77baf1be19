"""Argument normalisation shared by the reference ops: every bad value raises one :class:`OpArgumentError`
(a ``ValueError``, as PyTorch's functional ops raise) that names the parameter, the value and what would be
valid."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from cnnlab.errors import CnnlabError

__all__ = ["OpArgumentError", "PADDING_MODES", "ntuple", "padding_pairs", "as_float_array", "check_mode"]


class OpArgumentError(CnnlabError):
    """A reference op's argument (a shape, stride, padding, mode, ...) is not valid; the message names it."""


PADDING_MODES = ("zeros", "constant", "reflect", "replicate", "circular")
PADDING_STRINGS = ("valid", "same", "full")


def check_mode(padding_mode: str) -> str:
    if padding_mode not in PADDING_MODES:
        raise OpArgumentError(f"padding_mode must be one of {', '.join(PADDING_MODES)}; got {padding_mode!r}")
    return padding_mode


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def ntuple(value, n: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    """``value`` (an int, or a sequence of ``n`` ints) as an ``n``-tuple of ints >= ``minimum``."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    items = (value,) * n if _is_int(value) else tuple(value) if isinstance(value, (tuple, list)) else None
    if items is None or len(items) != n or not all(_is_int(v) for v in items):
        raise OpArgumentError(f"{name} must be {what} or a sequence of {n} of them; got {value!r}")
    if any(v < minimum for v in items):
        raise OpArgumentError(f"{name} must be {what} (per dimension); got {value!r}")
    return tuple(int(v) for v in items)


def padding_pairs(padding, n: int, kernel: Sequence[int], dilation: Sequence[int],
                  stride: Sequence[int], sizes: Sequence[int] | None = None,
                  name: str = "padding") -> tuple[tuple[int, int], ...]:
    """Padding as ``n`` ``(before, after)`` pairs, one per spatial dimension (first dimension first).

    Accepted forms: an int (every side), ``n`` ints (symmetric per dimension), ``2n`` ints per side
    in dimension order (2D: ``(top, bottom, left, right)``), or a string:

    * ``"valid"``: no padding;
    * ``"full"``: ``dilation * (kernel - 1)`` on every side (every partial overlap; the output is
      larger than the input);
    * ``"same"``: output size ``ceil(size / stride)``, the total split with the extra element after
      (PyTorch's rule for stride 1; TensorFlow's for larger strides, which PyTorch refuses).
    """
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise OpArgumentError(f"{name} must be an int, a sequence of {n} or {2 * n} ints, or one of "
                                  f"{', '.join(PADDING_STRINGS)}; got {padding!r}")
        eff = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        if padding == "valid":
            return ((0, 0),) * n
        if padding == "full":
            return tuple((e - 1, e - 1) for e in eff)
        if sizes is None:
            raise OpArgumentError(f"{name}='same' needs the input size")
        pairs = []
        for size, e, s in zip(sizes, eff, stride):
            total = max((math.ceil(size / s) - 1) * s + e - size, 0)
            pairs.append((total // 2, total - total // 2))
        return tuple(pairs)
    if _is_int(padding):
        items = (padding,) * n
    elif isinstance(padding, (tuple, list)) and all(_is_int(v) for v in padding) and len(padding) in (n, 2 * n):
        items = tuple(padding)
    else:
        raise OpArgumentError(f"{name} must be an int, a sequence of {n} or {2 * n} ints, or one of "
                              f"{', '.join(PADDING_STRINGS)}; got {padding!r}")
    if any(v < 0 for v in items):
        raise OpArgumentError(f"{name} must be non-negative; got {padding!r}")
    if len(items) == n:
        return tuple((int(p), int(p)) for p in items)
    return tuple((int(items[2 * i]), int(items[2 * i + 1])) for i in range(n))


def as_float_array(a, name: str) -> np.ndarray:
    """``a`` as a floating NumPy array: float arrays keep their dtype, integers become float64."""
    try:
        arr = np.asarray(a)
    except ValueError as e:  # ragged nested lists
        raise OpArgumentError(f"{name} must be a rectangular array; got a ragged sequence ({e})") from None
    if arr.dtype == object:
        raise OpArgumentError(f"{name} must be a rectangular array of numbers")
    if not np.issubdtype(arr.dtype, np.floating):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise OpArgumentError(f"{name} must hold numbers; got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    return arr
