"""A model summary for any network: one row per layer with output shape, parameters, MACs and the
receptive field of its output units; totals; the lecture's Keras-style counting on request.

MACs are multiply-accumulates for one input sample (one MAC = one multiply and one add; FLOPs are
about 2 x MACs), counted with ``torch.utils.flop_counter``'s formulas (convolutions, grouped and
depthwise included, linear layers, matrix products, attention). Normalisation, activation, pooling and
additions cost no MACs here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field as dataclass_field
from typing import Sequence

import torch
import torch.nn as nn

from cnnlab.analysis.graph import Graph, trace
from cnnlab.analysis.receptive_field import Field, receptive_fields

__all__ = ["LayerRow", "Summary", "summarize", "dense_equivalent", "QUIET_FUNCTIONS"]

# operations that only rearrange memory: traced (they carry shapes and receptive fields) but not rows
QUIET_FUNCTIONS = {"contiguous", "view", "reshape", "permute", "transpose", "to", "float", "half", "bfloat16",
                   "type", "type_as", "clone", "detach", "getitem", "expand", "expand_as", "squeeze",
                   "unsqueeze", "chunk", "split", "movedim", "swapaxes", "view_as", "reshape_as", "unbind"}
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class LayerRow:
    """One row: parameters are counted at a module's first call only (a shared module's later calls
    show 0)."""

    index: int
    name: str
    type: str
    kind: str
    output_shape: tuple[int, ...] | None
    params: int = 0
    trainable_params: int = 0
    macs: int = 0
    rf: Field | None = None
    dense_equivalent: int | None = None
    inputs: list[str] = dataclass_field(default_factory=list)
    group: str | None = None  # with ``depth``: the ancestor module this row folds into

    @property
    def non_trainable_params(self) -> int:
        return self.params - self.trainable_params

    def receptive_field_dict(self) -> dict | None:
        if self.rf is None or self.rf.is_global or not self.rf.axes:
            return None
        axes = self.rf.ordered()
        return {"size": [a.size for a in axes], "jump": [a.jump for a in axes], "start": [a.start for a in axes]}

    def to_dict(self) -> dict:
        d = {"name": self.name, "type": self.type, "kind": self.kind,
             "output_shape": list(self.output_shape) if self.output_shape is not None else None,
             "params": self.params, "trainable_params": self.trainable_params, "macs": self.macs,
             "receptive_field": self.receptive_field_dict(), "inputs": self.inputs}
        if self.rf is not None and self.rf.is_global:
            d["receptive_field_note"] = "every input pixel" + (f": {self.rf.note}" if self.rf.note else "")
        if self.dense_equivalent is not None:
            d["dense_equivalent_params"] = self.dense_equivalent
        return d


@dataclass
class Summary:
    model: str
    input_size: tuple[int, ...]
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    total_macs: int
    activation_mb: float
    param_mb: float
    keras: bool = False
    graph: Graph | None = None

    def to_dict(self) -> dict:
        return {"model": self.model, "input": list(self.input_size), "layers": [r.to_dict() for r in self.rows],
                "total_params": self.total_params, "trainable_params": self.trainable_params,
                "non_trainable_params": self.non_trainable_params, "total_macs": self.total_macs,
                "activation_mb": round(self.activation_mb, 3), "param_mb": round(self.param_mb, 3),
                "counting": "keras (BatchNorm running statistics are non-trainable parameters)" if self.keras
                else "pytorch (parameters only; buffers such as BatchNorm running statistics are not counted)"}

    def table(self, dense_equivalent: bool = False) -> str:
        """The summary as an aligned text table with totals."""
        head = ["Layer", "Type", "Output shape", "Params", "MACs", "RF size", "jump", "start"]
        if dense_equivalent:
            head.append("Dense equivalent")
        body = []
        for r in self.rows:
            rf = r.receptive_field_dict()
            cells = [r.name, r.type, "x".join(map(str, r.output_shape)) if r.output_shape is not None else "",
                     f"{r.params:,}" if r.params else ("0" if r.kind == "module" else ""),
                     f"{r.macs:,}" if r.macs else "",
                     _axes(rf["size"]) if rf else ("all" if r.rf is not None and r.rf.is_global else ""),
                     _axes(rf["jump"]) if rf else "", _axes(rf["start"]) if rf else ""]
            if dense_equivalent:
                cells.append(f"{r.dense_equivalent:,}" if r.dense_equivalent is not None else "")
            body.append(cells)
        widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
        right = {3, 4, 5, 6, 7, 8}
        line = lambda cells: "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)  # noqa: E731
                                       for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        rule = "-" * len(line(head))
        out = [f"{self.model}, input {'x'.join(map(str, self.input_size))}", rule, line(head), rule]
        out += [line(c) for c in body]
        out += [rule, f"Total params: {self.total_params:,}", f"Trainable params: {self.trainable_params:,}",
                f"Non-trainable params: {self.non_trainable_params:,}" +
                (" (BatchNorm running statistics, counted as Keras does)" if self.keras else ""),
                f"Total MACs: {self.total_macs:,} ({_si(self.total_macs)}MACs; FLOPs ~ 2 x MACs)",
                f"Memory: activations {self.activation_mb:.2f} MB (forward, one sample), "
                f"parameters {self.param_mb:.2f} MB", rule]
        return "\n".join(out)


def _axes(v: list[float]) -> str:
    fmt = lambda x: f"{x:g}"  # noqa: E731
    return fmt(v[0]) if len(set(v)) == 1 else ",".join(fmt(x) for x in v)


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} "


def _keras_buffers(m: nn.Module) -> int:
    if isinstance(m, _BN) and m.track_running_stats and m.running_mean is not None:
        return m.running_mean.numel() + m.running_var.numel()
    return 0


def dense_equivalent(input_shape: Sequence[int], output_shape: Sequence[int]) -> int:
    """Parameters of a dense layer with the same input and output activations as a layer mapping one sample of
    ``input_shape`` to ``output_shape``: every input to every output, plus a bias per output (the lecture's
    65,536 x 131,072 + 131,072 = 8,590,065,664 for ``nn.Conv2d(16, 32, 3, padding=1)`` on 64x64)."""
    i, o = math.prod(input_shape), math.prod(output_shape)
    return i * o + o


def summarize(model: nn.Module, input_size, *, keras: bool = False, depth: int | None = None,
              model_name: str | None = None, device: str | torch.device | None = None,
              include_quiet: bool = False) -> Summary:
    """Trace ``model`` on one ``input_size`` (C, H, W) sample and summarise it.

    Args:
        keras: count BatchNorm running means and variances as non-trainable parameters (what Keras
            and the lecture's tables do; PyTorch keeps them as buffers).
        depth: fold rows below this nesting depth into their ancestor module (``1``: top-level blocks).
        include_quiet: keep rows for pure memory rearrangements (view, permute, ...).
    """
    graph = trace(model, input_size, device=device, model_name=model_name)
    fields = receptive_fields(graph)
    rows: list[LayerRow] = []
    seen: set[int] = set()
    names = {n.index: n.name for n in graph.nodes}
    for node, rf in zip(graph.nodes, fields):
        if node.kind == "function" and node.type in QUIET_FUNCTIONS and not include_quiet:
            continue
        params = trainable = 0
        if node.module is not None and id(node.module) not in seen:
            seen.add(id(node.module))
            own = list(node.module.parameters(recurse=node.kind == "module"))
            params = sum(p.numel() for p in own)
            trainable = sum(p.numel() for p in own if p.requires_grad)
            if keras and node.kind == "module":
                params += _keras_buffers(node.module)
        dense = None
        if node.kind == "module" and isinstance(node.module, _CONVS) and node.input_shapes:
            dense = dense_equivalent(node.input_shapes[0], node.output_shape)
        rows.append(LayerRow(node.index, node.name, node.type, node.kind, node.output_shape, params, trainable,
                             node.macs, rf, dense, [names[i] for i in node.inputs]))
    total = sum(p.numel() for p in model.parameters())
    trainable_total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counted = sum(r.params for r in rows) - (sum(_keras_buffers(m) for m in model.modules()) if keras else 0)
    if counted != total:  # parameters used outside the forward of the module that owns them
        rows.append(LayerRow(-1, "(other parameters)", "", "params", None, total - counted, trainable_total -
                             sum(r.trainable_params for r in rows)))
    if keras:
        total += sum(_keras_buffers(m) for m in model.modules())
    if depth is not None:
        rows = _fold(rows, depth, model)
    elem = next((p.element_size() for p in model.parameters()), 4)
    activations = sum(math.prod(n.output_shape) for n in graph.nodes if n.output_shape is not None and
                      not (n.kind == "function" and n.type in QUIET_FUNCTIONS))
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return Summary(model_name or type(model).__name__, tuple(graph.input_size), rows, total, trainable_total,
                   total - trainable_total, sum(n.macs for n in graph.nodes), activations * elem / 2**20,
                   param_bytes / 2**20, keras, graph)


def _fold(rows: list[LayerRow], depth: int, model: nn.Module) -> list[LayerRow]:
    """Merge consecutive rows that share their first ``depth`` name components."""
    if depth < 1:
        raise ValueError(f"depth must be a positive integer; got {depth}")
    modules = dict(model.named_modules())
    out: list[LayerRow] = []
    for r in rows:
        parts = r.name.split(" ")[0].split(".")
        key = ".".join(parts[:depth]) if len(parts) > depth else None
        if key is not None and out and out[-1].group == key:
            g = out[-1]
            g.params += r.params
            g.trainable_params += r.trainable_params
            g.macs += r.macs
            g.output_shape, g.rf = r.output_shape or g.output_shape, r.rf if r.output_shape else g.rf
            continue
        if key is not None:
            m = modules.get(key)
            r = LayerRow(r.index, key, type(m).__name__ if m is not None else r.type, "block", r.output_shape,
                         r.params, r.trainable_params, r.macs, r.rf, None, r.inputs, key)
        out.append(r)
    return out
