"""Receptive fields on a traced graph, for any network.

Each spatial axis of a node's output carries ``(size, jump, start)`` in input pixels, in the convention
of the lecture's pytorch-receptive-field table: input pixel centres sit at 0.5, 1.5, ...; ``start`` is
the centre of the first output unit's field, ``jump`` the distance between neighbouring units' centres,
``size`` the field's width (Araujo et al., "Computing receptive fields of convolutional neural
networks", Distill 2019). A convolution or pooling with kernel ``k``, stride ``s``, padding ``p`` (before)
and dilation ``d`` maps ``(r, j, t)`` to ``(r + (d(k - 1)) j, j s, t + (d(k - 1) / 2 - p) j)``.

Merges (residual additions, Inception concatenations, broadcasting products) take the union of their
inputs' fields. A field becomes *global* (every input pixel can matter) after anything that mixes all
positions: flattening into a dense layer, global or uneven adaptive pooling, attention, a product
with a globally pooled tensor (squeeze-and-excitation). Normalisation layers count as pointwise (their
statistics are ignored, as is usual; in eval mode BatchNorm is pointwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch.nn as nn

from cnnlab.analysis.graph import Graph, Node

__all__ = ["AxisField", "Field", "receptive_fields", "unit_region"]


@dataclass(frozen=True)
class AxisField:
    size: float
    jump: float
    start: float

    def region(self, unit: int) -> tuple[float, float]:
        """The field of unit ``unit`` along this axis, in continuous input coordinates (unclipped)."""
        centre = self.start + unit * self.jump
        return centre - self.size / 2, centre + self.size / 2


@dataclass(frozen=True)
class Field:
    """The receptive field of a node's output units: one :class:`AxisField` per spatial axis of the
    output tensor (keyed by the axis index, batch included), or ``is_global``."""

    axes: dict[int, AxisField] = field(default_factory=dict)
    is_global: bool = False
    note: str | None = None

    @staticmethod
    def everything(note: str | None = None) -> "Field":
        return Field({}, True, note)

    def ordered(self) -> list[AxisField]:
        return [self.axes[a] for a in sorted(self.axes)]


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
             nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_GLOBAL_MODULES = (nn.MultiheadAttention, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
                   nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Bilinear)
_RESHAPES = {"flatten", "view", "reshape", "unflatten", "squeeze", "unsqueeze", "contiguous", "expand",
             "expand_as", "view_as", "reshape_as", "chunk", "split", "getitem", "clone", "to", "float",
             "half", "bfloat16", "type", "type_as", "detach"}
_MATMULS = {"matmul", "mm", "bmm", "einsum", "baddbmm", "addmm", "scaled_dot_product_attention",
            "multi_head_attention_forward", "interpolate", "upsample", "grid_sample", "unfold", "fold",
            "pixel_shuffle", "pixel_unshuffle", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
            "softmax", "log_softmax"}
_REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod"}
_POOL_FUNCS = {"max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
               "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices"}
_CONV_FUNCS = {"conv1d", "conv2d", "conv3d"}


def _tuple(v, n: int) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _window(rf: Field, in_shape: tuple, n: int, kernel, stride, padding, dilation, name: str) -> Field:
    """Apply a window op over the last ``n`` axes of a tensor of shape ``in_shape`` (batch included)."""
    if rf.is_global:
        return rf
    ndim = len(in_shape)
    axes = list(range(ndim - n, ndim))
    if not all(a in rf.axes for a in axes):
        return Field.everything(f"{name} slides over axes that are not spatial")
    kernel, stride, dilation = _tuple(kernel, n), _tuple(stride, n), _tuple(dilation, n)
    if isinstance(padding, str):
        if padding == "same":
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
        else:
            padding = (0,) * n
    padding = _tuple(padding, n)
    new = dict(rf.axes)
    for a, k, s, p, d in zip(axes, kernel, stride, padding, dilation):
        f = rf.axes[a]
        span = d * (k - 1)
        new[a] = AxisField(f.size + span * f.jump, f.jump * s, f.start + (span / 2 - p) * f.jump)
    return Field(new)


def _adaptive(rf: Field, in_shape: tuple, out_shape: tuple, name: str) -> Field:
    if rf.is_global:
        return rf
    new = dict(rf.axes)
    for a in list(rf.axes):
        i, o = in_shape[a], out_shape[a]
        if i == o:
            continue
        if o == 1:
            return Field.everything(f"{name} pools each map to one value")
        if i % o:
            return Field.everything(f"{name}: {i} -> {o} windows are uneven")
        k = i // o
        f = rf.axes[a]
        new[a] = AxisField(f.size + (k - 1) * f.jump, f.jump * k, f.start + (k - 1) / 2 * f.jump)
    return Field(new)


def _reshape(rf: Field, in_shape: tuple, out_shape: tuple, name: str) -> Field:
    """Spatial axes survive a reshape only as the same trailing dimensions (e.g. a channel shuffle)."""
    if rf.is_global or not rf.axes:
        return rf
    ndim_in, ndim_out = len(in_shape), len(out_shape)
    k = ndim_in - min(rf.axes)
    if sorted(rf.axes) != list(range(ndim_in - k, ndim_in)) or ndim_out < k + 1 or \
            tuple(in_shape[-k:]) != tuple(out_shape[-k:]):
        return Field.everything(f"{name} mixes the spatial positions into one axis")
    return Field({a - ndim_in + ndim_out: f for a, f in rf.axes.items()})


def _union(fields: list[Field], shapes: list[tuple], out_shape: tuple, name: str) -> Field:
    if any(f.is_global for f in fields):
        notes = [f.note for f in fields if f.is_global and f.note]
        return Field.everything(notes[0] if notes else None)
    ndim = len(out_shape)
    merged: dict[int, list[AxisField]] = {}
    for f, shape in zip(fields, shapes):
        for a, af in f.axes.items():
            merged.setdefault(a - len(shape) + ndim, []).append(af)
    axes = {}
    for a, afs in merged.items():
        if len({af.jump for af in afs}) > 1:
            return Field.everything(f"{name} merges maps with different jumps")
        lo = min(af.start - af.size / 2 for af in afs)
        hi = max(af.start + af.size / 2 for af in afs)
        axes[a] = AxisField(hi - lo, afs[0].jump, (lo + hi) / 2)
    return Field(axes)


def _arg(node: Node, index: int, key: str, default=None):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(key, default)


def _module_field(node: Node, rf: Field, in_shape: tuple, out_shape: tuple) -> Field:
    m = node.module
    if isinstance(m, _CONV):
        n = len(m.kernel_size)
        return _window(rf, in_shape, n, m.kernel_size, m.stride, m.padding, m.dilation, node.name)
    if isinstance(m, _POOL):
        n = int(type(m).__name__[-2])
        return _window(rf, in_shape, n, m.kernel_size, m.stride, m.padding, getattr(m, "dilation", 1), node.name)
    if isinstance(m, _ADAPTIVE):
        return _adaptive(rf, in_shape, out_shape, node.name)
    if isinstance(m, _GLOBAL_MODULES):
        return Field.everything(f"{node.name} ({node.type}) is not a sliding window")
    if isinstance(m, (nn.Linear, nn.LazyLinear)):
        return Field.everything(f"{node.name} is dense over spatial positions") if \
            (len(in_shape) - 1) in rf.axes else rf
    if type(m).__module__ == "torch.nn.modules.padding":  # ZeroPad2d, ReflectionPad2d, ...
        return _pad(rf, in_shape, tuple(m.padding))
    if type(m).__name__ == "Permute" and hasattr(m, "dims"):  # torchvision.ops.Permute (ConvNeXt)
        return _permute(rf, [d % len(in_shape) for d in m.dims])
    if isinstance(m, (nn.Flatten, nn.Unflatten)) or in_shape != out_shape:
        return _reshape(rf, in_shape, out_shape, node.name)
    return rf


def _pad(rf: Field, in_shape: tuple, pads) -> Field:
    """``F.pad`` order: (before, after) pairs from the last axis backwards. Padding before an axis
    moves the first unit's field back by that many input positions."""
    if rf.is_global:
        return rf
    new = dict(rf.axes)
    for i in range(len(pads) // 2):
        a = len(in_shape) - 1 - i
        if a in new:
            af = new[a]
            new[a] = AxisField(af.size, af.jump, af.start - pads[2 * i] * af.jump)
    return Field(new)


def _permute(rf: Field, order: list[int]) -> Field:
    """Output axis ``i`` is input axis ``order[i]``."""
    if rf.is_global:
        return rf
    return Field({order.index(a): af for a, af in rf.axes.items()})


def _function_field(node: Node, fields: list[Field], shapes: list[tuple], out_shape: tuple) -> Field:
    f = node.type
    rf, in_shape = fields[0], shapes[0]
    if f in _CONV_FUNCS:
        w = _arg(node, 1, "weight")
        n = int(f[-2])
        return _window(rf, in_shape, n, tuple(w[2:]), _arg(node, 3, "stride", 1), _arg(node, 4, "padding", 0),
                       _arg(node, 5, "dilation", 1), node.name)
    if f in _POOL_FUNCS:
        n = int(f.split("_")[1][-2])
        k = _arg(node, 1, "kernel_size")
        s = _arg(node, 2, "stride", None) or k
        d = _arg(node, 4, "dilation", 1) if f.startswith("max") else 1
        return _window(rf, in_shape, n, k, s, _arg(node, 3, "padding", 0), d, node.name)
    if f.startswith("adaptive_"):
        return _adaptive(rf, in_shape, out_shape, node.name)
    if f in _MATMULS:
        return Field.everything(f"{node.name} ({f}) mixes positions")
    if f == "linear":
        return Field.everything(f"{node.name} is dense over spatial positions") if \
            (len(in_shape) - 1) in rf.axes else rf
    if f == "pad":
        return _pad(rf, in_shape, _arg(node, 1, "pad"))
    if f in ("permute", "transpose", "movedim", "swapaxes", "swapdims", "t"):
        if rf.is_global:
            return rf
        ndim = len(in_shape)
        order = list(range(ndim))
        if f == "permute":
            dims = node.args[1:] if len(node.args) > 2 or not isinstance(_arg(node, 1, "dims"), (tuple, list)) \
                else _arg(node, 1, "dims")
            order = [d % ndim for d in dims]
        else:
            a, b = _arg(node, 1, "dim0", 0) % ndim, _arg(node, 2, "dim1", 1) % ndim
            if f == "movedim":
                order.insert(b, order.pop(a))
            else:
                order[a], order[b] = order[b], order[a]
        return _permute(rf, order)
    if f in _REDUCTIONS:
        if rf.is_global:
            return rf
        dims = _arg(node, 1, "dim", None)
        ndim = len(in_shape)
        if dims is None or isinstance(dims, (str,)) or not isinstance(dims, (int, tuple, list)):
            return Field.everything(f"{node.name} reduces over every position")
        dims = {d % ndim for d in _tuple(dims, 1)}
        if dims & set(rf.axes):
            return Field.everything(f"{node.name} reduces over spatial positions")
        if len(out_shape) == ndim:
            return rf
        return Field({a - sum(1 for d in dims if d < a): af for a, af in rf.axes.items()})
    if f in _RESHAPES:
        return _reshape(rf, in_shape, out_shape, node.name)
    if f in ("cat", "stack"):
        if any(fl.is_global for fl in fields):
            return _union(fields, shapes, out_shape, node.name)
        dim = _arg(node, 1, "dim", 0)
        ndim = len(in_shape)
        if f == "cat" and dim % ndim in rf.axes:
            return Field.everything(f"{node.name} concatenates along a spatial axis")
        if f == "stack":
            d = dim % (ndim + 1)
            fields = [Field({a + (a >= d): af for a, af in fl.axes.items()}) for fl in fields]
            shapes = [out_shape] * len(fields)
        return _union(fields, shapes, out_shape, node.name)
    # elementwise (add, mul, activations, ...) and anything else that keeps the broadcast shape
    if all(len(s) <= len(out_shape) for s in shapes) and \
            all(tuple(s[-k:]) == tuple(out_shape[-k:]) or 1 in s for s in shapes for k in [len(s)] if k):
        return _union(fields, shapes, out_shape, node.name)
    return _reshape(rf, in_shape, out_shape, node.name) if len(fields) == 1 else \
        Field.everything(f"{node.name} ({f}): receptive field not defined for this operation")


def receptive_fields(graph: Graph) -> list[Field | None]:
    """The receptive field of every node's output (None for parameter rows)."""
    nodes = graph.nodes
    fields: list[Field | None] = [None] * len(nodes)
    full = {n.index: (1,) + tuple(n.output_shape) for n in nodes if n.output_shape is not None}
    spatial = len(graph.input_size) - 1
    for node in nodes:
        if node.kind == "input":
            fields[node.index] = Field({a: AxisField(1.0, 1.0, 0.5) for a in range(2, 2 + spatial)})
            continue
        if node.kind == "params" or node.output_shape is None:
            continue
        ins = [i for i in node.inputs if fields[i] is not None]
        if not ins:  # computed from parameters and constants only (e.g. a class token)
            fields[node.index] = Field({})
            continue
        in_fields = [fields[i] for i in ins]
        in_shapes = [full[i] for i in ins]
        out_shape = full[node.index]
        if node.kind == "module":
            rf = _module_field(node, _union(in_fields, in_shapes, in_shapes[0], node.name)
                               if len(ins) > 1 else in_fields[0], in_shapes[0], out_shape)
        else:
            rf = _function_field(node, in_fields, in_shapes, out_shape)
        fields[node.index] = rf
    return fields


def unit_region(af: AxisField, unit: int, extent: int) -> dict:
    """Where unit ``unit`` looks along one axis of an input ``extent`` pixels long.

    ``bounds``: the continuous interval (the lecture's tool prints it clipped to ``[0, extent]``);
    ``pixels``: the first and last input pixel whose centre lies inside it (inclusive).
    """
    lo, hi = af.region(unit)
    first, last = max(0, math.ceil(lo - 0.5)), min(extent - 1, math.floor(hi - 0.5))
    return {"unclipped": [lo, hi], "bounds": [max(0.0, lo), min(float(extent), hi)],
            "pixels": [first, last] if first <= last else None, "centre": af.start + unit * af.jump}
