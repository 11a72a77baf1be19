"""A 2D operation taken apart position by position: what the lecture's figures show.

:func:`trace2d` runs correlation, convolution, max or average pooling on one single-channel 2D
array with the reference ops and records, for every output position, the window it read (in the
padded input's coordinates), the weights, the products and the result. ``cnnlab conv --steps``
prints it and :func:`cnnlab.ops.animate` (in :mod:`cnnlab.ops.animation`) draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cnnlab.ops._args import as_float_array, check_mode, ntuple
from cnnlab.ops.conv import conv_nd, resolve_padding, windows
from cnnlab.ops.pad import pad
from cnnlab.ops.pool import _avg_divisor, _setup, avg_pool2d, max_pool2d

__all__ = ["OPS", "Step", "Trace", "trace2d", "format_number"]

OPS = ("correlate", "convolve", "max", "avg")


def format_number(v: float) -> str:
    """``12`` for whole numbers, else 4 significant digits; ``-inf`` for max pooling's padding."""
    v = float(v)
    if np.isfinite(v) and v == round(v) and abs(v) < 1e15:
        return str(int(round(v)))
    return f"{v:.4g}"


@dataclass
class Step:
    """One output position: ``output[index] = result`` computed from ``values`` (and ``weights``)."""

    index: tuple[int, int]
    rows: np.ndarray  # (kH,) rows of the padded input the window reads
    cols: np.ndarray  # (kW,) columns of the padded input the window reads
    values: np.ndarray  # (kH, kW) the padded input under the window
    result: float
    weights: np.ndarray | None = None  # (kH, kW) correlation/convolution only (as applied)
    divisor: float | None = None  # average pooling only

    def formula(self, op: str) -> str:
        """The computation as a person writes it, e.g. ``3*0 + 3*1 + 2*2 + ... = 12``."""
        vals = [format_number(v) for v in self.values.ravel()]
        if op in ("correlate", "convolve"):
            terms = " + ".join(f"{v}*{format_number(w)}" for v, w in zip(vals, self.weights.ravel()))
            return f"{terms} = {format_number(self.result)}"
        if op == "max":
            return f"max({', '.join(vals)}) = {format_number(self.result)}"
        return f"({' + '.join(vals)}) / {format_number(self.divisor)} = {format_number(self.result)}"

    def to_dict(self, op: str) -> dict:
        d = {"index": list(self.index), "rows": self.rows.tolist(), "cols": self.cols.tolist(),
             "values": self.values.tolist(), "result": float(self.result), "formula": self.formula(op)}
        if self.weights is not None:
            d["weights"] = self.weights.tolist()
            d["products"] = (self.values * self.weights).tolist()
        if self.divisor is not None:
            d["divisor"] = float(self.divisor)
        return d


@dataclass
class Trace:
    """Everything needed to show a 2D operation: the input, its padding, the kernel and each step."""

    op: str
    input: np.ndarray  # (H, W)
    padded: np.ndarray  # (H + top + bottom, W + left + right)
    pads: tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    output: np.ndarray
    steps: list[Step] = field(default_factory=list)
    kernel: np.ndarray | None = None  # as applied: flipped for "convolve"
    padding_mode: str = "zeros"

    @property
    def is_padding(self) -> np.ndarray:
        """Boolean mask over ``padded``: True where the value is padding, not input."""
        mask = np.ones(self.padded.shape, dtype=bool)
        (t, _), (l, _) = self.pads
        mask[t:t + self.input.shape[0], l:l + self.input.shape[1]] = False
        return mask

    def to_dict(self) -> dict:
        def arr(a):
            return np.where(np.isfinite(a), a, np.nan).tolist() if a is not None else None

        return {"op": self.op, "input": self.input.tolist(), "padded": arr(self.padded),
                "pads": [list(p) for p in self.pads], "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "dilation": list(self.dilation),
                "padding_mode": self.padding_mode, "kernel": arr(self.kernel),
                "output": self.output.tolist(), "output_shape": list(self.output.shape),
                "steps": [s.to_dict(self.op) for s in self.steps]}


def trace2d(x, kernel=None, op: str = "correlate", *, kernel_size=None, stride=None, padding=0, dilation=1,
            padding_mode: str = "zeros", value: float = 0.0, ceil_mode: bool = False,
            count_include_pad: bool = True) -> Trace:
    """Compute ``op`` on the 2D array ``x`` with the reference ops and record every step.

    Args:
        x: (H, W) input.
        kernel: (kH, kW) weights for ``correlate``/``convolve``; for ``max``/``avg`` only its shape is
            used (when ``kernel_size`` is not given).
        op: ``correlate`` (deep learning's convolution), ``convolve`` (kernel flipped), ``max``, ``avg``.
        stride: default 1 for correlation/convolution, the kernel size for pooling (PyTorch's defaults).
        padding, dilation, padding_mode, value: as in :func:`cnnlab.ops.conv2d` (pooling: an int or
            pair, zero padding for ``avg``, ``-inf`` for ``max``; no dilation for ``avg``).
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {', '.join(OPS)}; got {op!r}")
    x = as_float_array(x, "input")
    if x.ndim != 2:
        raise ValueError(f"input must be a 2D matrix; got shape {x.shape}")
    if op in ("correlate", "convolve"):
        if kernel is None:
            raise ValueError(f"op={op!r} needs a kernel matrix")
        k = as_float_array(kernel, "kernel")
        if k.ndim != 2:
            raise ValueError(f"kernel must be a 2D matrix; got shape {k.shape}")
        if op == "convolve":
            k = np.flip(k)
        stride = ntuple(1 if stride is None else stride, 2, "stride")
        dilation = ntuple(dilation, 2, "dilation")
        check_mode(padding_mode)
        out = conv_nd(x[None, None], k[None, None], None, stride, padding, dilation, 1, padding_mode, value)[0, 0]
        pads = resolve_padding(padding, 2, k.shape, stride, dilation, x.shape)
        xp = pad(x, pads, padding_mode, value)
        size, divisor = k.shape, None
    else:
        if kernel_size is None:
            if kernel is None:
                raise ValueError(f"op={op!r} needs kernel_size (or a kernel whose shape is the window)")
            kernel_size = np.shape(kernel)
            if len(kernel_size) != 2:
                raise ValueError(f"kernel must be a 2D matrix; got shape {kernel_size}")
        if op == "avg" and dilation not in (1, (1, 1), [1, 1]):
            raise ValueError(f"average pooling has no dilation; got dilation={dilation!r}")
        _, size, stride, pad_hw, dilation, pout, pads = _setup(x[None, None], kernel_size, stride, padding,
                                                                dilation, ceil_mode)
        k = None
        if op == "max":
            out = max_pool2d(x[None, None], size, stride, pad_hw, dilation, ceil_mode)[0, 0]
            xp = np.full(tuple(s + a + b for s, (a, b) in zip(x.shape, pads)), -np.inf)
        else:
            out = avg_pool2d(x[None, None], size, stride, pad_hw, ceil_mode, count_include_pad)[0, 0]
            xp = np.zeros(tuple(s + a + b for s, (a, b) in zip(x.shape, pads)))
            divisor = _avg_divisor(x[None, None].shape, size, stride, pad_hw, pout, count_include_pad, None, x.dtype)
        xp[pads[0][0]:pads[0][0] + x.shape[0], pads[1][0]:pads[1][0] + x.shape[1]] = x
    win = windows(xp, size, stride, dilation)
    steps = []
    for i, j in np.ndindex(out.shape):
        rows = i * stride[0] + np.arange(size[0]) * dilation[0]
        cols = j * stride[1] + np.arange(size[1]) * dilation[1]
        steps.append(Step((i, j), rows, cols, np.array(win[i, j]), float(out[i, j]),
                          None if k is None else k.copy(),
                          None if op != "avg" else float(divisor[i, j])))
    return Trace(op, x, xp, tuple(tuple(p) for p in pads), tuple(size), tuple(stride), tuple(dilation), out,
                 steps, None if k is None else k.copy(), padding_mode if op in ("correlate", "convolve") else
                 ("-inf" if op == "max" else "zeros"))
