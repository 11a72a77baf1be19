"""A 2D operation taken apart position by position: what the lecture's figures show.

:func:`trace2d` runs correlation, convolution, max or average pooling on one single-channel 2D
array with the reference ops and records, for every output position, the window it read (in the
padded input's coordinates), the weights, the products and the result. ``cnnlab conv --steps``
prints it and :func:`cnnlab.ops.animate` (in :mod:`cnnlab.ops.animation`) draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from cnnlab.ops._args import OpArgumentError, as_float_array, check_mode, ntuple
from cnnlab.ops.conv import conv_nd, resolve_padding, windows
from cnnlab.ops.limits import check_memory, memory_limit, trace_bytes
from cnnlab.ops.pad import pad
from cnnlab.ops.pool import _avg_divisor, _setup, avg_pool2d, max_pool2d

__all__ = ["OPS", "Step", "Trace", "trace2d", "check_trace2d", "format_number"]

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
    weights: np.ndarray | None = None  # (kH, kW) correlation/convolution only (as applied; read-only)
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
            with np.errstate(all="ignore"):  # inf * 0
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
    kernel: np.ndarray | None = None  # as applied: flipped for "convolve"; read-only, shared by the steps
    padding_mode: str = "zeros"
    notes: list[str] = field(default_factory=list)  # e.g. how many NaN/inf values and outputs

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
                "notes": list(self.notes), "steps": [s.to_dict(self.op) for s in self.steps]}


def trace2d(x, kernel=None, op: str = "correlate", *, kernel_size=None, stride=None, padding=0, dilation=1,
            padding_mode: str = "zeros", value: float = 0.0, ceil_mode: bool = False,
            count_include_pad: bool = True, max_bytes: int | None = None) -> Trace:
    """Compute ``op`` on the 2D array ``x`` with the reference ops and record every step.

    Args:
        x: (H, W) input.
        kernel: (kH, kW) weights for ``correlate``/``convolve``; for ``max``/``avg`` only its shape is
            used (when ``kernel_size`` is not given).
        op: ``correlate`` (deep learning's convolution), ``convolve`` (kernel flipped), ``max``, ``avg``.
        stride: default 1 for correlation/convolution, the kernel size for pooling (PyTorch's defaults).
        padding, dilation, padding_mode, value: as in :func:`cnnlab.ops.conv2d` (pooling: an int or
            pair, zero padding for ``avg``, ``-inf`` for ``max``; no dilation for ``avg``).
        max_bytes: the memory limit in bytes (default ``$CNNLAB_CONV_MEMORY``, else
            :data:`cnnlab.ops.limits.MEMORY_LIMIT`, 1 GiB).

    The memory the op and its steps take is estimated from the shapes first (:func:`check_trace2d`);
    over the limit, :class:`~cnnlab.ops.limits.MemoryLimitError` is raised before anything is
    computed. NaN and infinite values propagate without NumPy warnings; ``Trace.notes`` says how
    many there were and how many outputs they reached.
    """
    g = _geometry(x, kernel, op, kernel_size, stride, padding, dilation, padding_mode, ceil_mode)
    _check_memory(g, False, max_bytes)
    x, k, size, stride, dilation, pads = g.x, g.kernel, g.size, g.stride, g.dilation, g.pads
    divisor = None
    with np.errstate(all="ignore"):
        if k is not None:
            out = conv_nd(x[None, None], k[None, None], None, stride, padding, dilation, 1,
                          padding_mode=padding_mode, value=value)[0, 0]
            xp = pad(x, pads, padding_mode, value)
        elif op == "max":
            out = max_pool2d(x[None, None], size, stride, g.pool_padding, dilation, ceil_mode)[0, 0]
            xp = np.full(g.padded_shape, -np.inf)
        else:
            out = avg_pool2d(x[None, None], size, stride, g.pool_padding, ceil_mode, count_include_pad)[0, 0]
            xp = np.zeros(g.padded_shape)
            divisor = _avg_divisor(x[None, None].shape, size, stride, g.pool_padding, g.output_shape,
                                   count_include_pad, None, x.dtype)
        if k is None:
            xp[pads[0][0]:pads[0][0] + x.shape[0], pads[1][0]:pads[1][0] + x.shape[1]] = x
    applied = None
    if k is not None:  # one read-only copy that every step refers to
        applied = k.copy()
        applied.flags.writeable = False
    win = windows(xp, size, stride, dilation)
    steps = []
    for i, j in np.ndindex(out.shape):
        rows = i * stride[0] + np.arange(size[0]) * dilation[0]
        cols = j * stride[1] + np.arange(size[1]) * dilation[1]
        steps.append(Step((i, j), rows, cols, np.array(win[i, j]), float(out[i, j]), applied,
                          None if op != "avg" else float(divisor[i, j])))
    notes = _notes(x, applied, out, value if k is not None and padding_mode == "constant" and
                   any(a or b for a, b in pads) else None)
    return Trace(op, x, xp, tuple(tuple(p) for p in pads), tuple(size), tuple(stride), tuple(dilation), out,
                 steps, applied, padding_mode if k is not None else ("-inf" if op == "max" else "zeros"), notes)


def check_trace2d(x, kernel=None, op: str = "correlate", *, as_json: bool = False, max_bytes: int | None = None,
                  kernel_size=None, stride=None, padding=0, dilation=1, padding_mode: str = "zeros",
                  ceil_mode: bool = False, **_ignored) -> int:
    """The bytes ``trace2d(x, kernel, op, ...)`` would take, from the shapes alone; raise
    :class:`~cnnlab.ops.limits.MemoryLimitError` when they are over the limit.

    ``as_json``: also count ``Trace.to_dict()`` and its JSON text (what ``cnnlab conv --json`` prints).
    Takes :func:`trace2d`'s arguments; those that do not change the sizes (``value``,
    ``count_include_pad``) are accepted and ignored. Bad arguments raise what :func:`trace2d` raises.
    """
    g = _geometry(x, kernel, op, kernel_size, stride, padding, dilation, padding_mode, ceil_mode)
    return _check_memory(g, as_json, max_bytes)


class _Geometry(NamedTuple):
    """A trace's arguments, checked and normalised, and the shapes that follow from them."""

    op: str
    x: np.ndarray
    kernel: np.ndarray | None  # as applied (flipped for "convolve"); None for pooling
    size: tuple[int, int]  # the window
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]  # as the padded input holds them
    pool_padding: tuple[int, int] | None  # pooling: the symmetric padding the op takes
    padded_shape: tuple[int, int]
    output_shape: tuple[int, int]  # may be < 1 when the kernel does not fit; the op then says so


def _geometry(x, kernel, op, kernel_size, stride, padding, dilation, padding_mode, ceil_mode) -> _Geometry:
    if op not in OPS:
        raise OpArgumentError(f"op must be one of {', '.join(OPS)}; got {op!r}")
    x = as_float_array(x, "input")
    if x.ndim != 2:
        raise OpArgumentError(f"input must be a 2D matrix; got shape {x.shape}")
    k = pool_padding = None
    if op in ("correlate", "convolve"):
        if kernel is None:
            raise OpArgumentError(f"op={op!r} needs a kernel matrix")
        k = as_float_array(kernel, "kernel")
        if k.ndim != 2:
            raise OpArgumentError(f"kernel must be a 2D matrix; got shape {k.shape}")
        if op == "convolve":
            k = np.flip(k)
        stride = ntuple(1 if stride is None else stride, 2, "stride")
        dilation = ntuple(dilation, 2, "dilation")
        check_mode(padding_mode)
        pads = resolve_padding(padding, 2, kernel=k.shape, stride=stride, dilation=dilation, sizes=x.shape)
        size = tuple(k.shape)
        out_shape = tuple((n + a + b - d * (kk - 1) - 1) // s + 1
                          for n, (a, b), kk, d, s in zip(x.shape, pads, size, dilation, stride))
    else:
        if kernel_size is None:
            if kernel is None:
                raise OpArgumentError(f"op={op!r} needs kernel_size (or a kernel whose shape is the window)")
            kernel_size = np.shape(kernel)
            if len(kernel_size) != 2:
                raise OpArgumentError(f"kernel must be a 2D matrix; got shape {kernel_size}")
        if op == "avg" and dilation not in (1, (1, 1), [1, 1]):
            raise OpArgumentError(f"average pooling has no dilation; got dilation={dilation!r}")
        _, size, stride, pool_padding, dilation, out_shape, pads = _setup(x[None, None], kernel_size, stride,
                                                                           padding, dilation, ceil_mode)
    padded_shape = tuple(n + a + b for n, (a, b) in zip(x.shape, pads))
    return _Geometry(op, x, k, size, stride, dilation, pads, pool_padding, padded_shape, out_shape)


def _check_memory(g: _Geometry, as_json: bool, max_bytes: int | None) -> int:
    """The estimated bytes (:func:`cnnlab.ops.limits.trace_bytes`); over the limit, the one-line refusal."""
    needed = trace_bytes(g.x.shape, g.padded_shape, g.output_shape, g.size, weights=g.kernel is not None,
                         itemsize=g.x.dtype.itemsize, as_json=as_json)
    if needed > memory_limit(max_bytes):
        (t, b), (l, r) = g.pads
        padding = str(t) if t == b == l == r else f"(top {t}, bottom {b}, left {l}, right {r})"
        oh, ow = (max(n, 0) for n in g.output_shape)
        check_memory(needed, f"{g.op}: input {g.x.shape[0]}x{g.x.shape[1]} with padding {padding} and a "
                             f"{g.size[0]}x{g.size[1]} window ({oh}x{ow} = {oh * ow} output positions, one step "
                             f"record each{', and their JSON' if as_json else ''})",
                     "use a smaller input, less padding or a larger stride", max_bytes)
    return needed


def _count(a: np.ndarray) -> tuple[int, int]:
    """(NaN values, infinite values) in ``a``."""
    return int(np.isnan(a).sum()), int(np.isinf(a).sum())


def _notes(x: np.ndarray, kernel: np.ndarray | None, out: np.ndarray, value: float | None) -> list[str]:
    """What a reader of the output must know about NaN and infinite values, one sentence each."""
    parts = []
    for what, a in (("the input", x), ("the kernel", kernel)):
        if a is None:
            continue
        nan, inf = _count(a)
        if nan or inf:
            counts = " and ".join(f"{n} {name}" for n, name in ((nan, "NaN"), (inf, "inf")) if n)
            parts.append(f"{what} holds {counts} value{'s' if nan + inf > 1 else ''}")
    if value is not None and not np.isfinite(value):
        parts.append(f"the padding value is {format_number(value)}")
    bad = int(out.size - np.isfinite(out).sum())
    if parts:
        return ["; ".join(parts) + f"; {bad} of the {out.size} outputs {'is' if bad == 1 else 'are'} NaN or inf"]
    if bad:
        return [f"{bad} of the {out.size} outputs overflowed to inf or NaN (sums beyond the largest "
                f"{out.dtype} number, about {np.finfo(out.dtype).max:.1e})"]
    return []
