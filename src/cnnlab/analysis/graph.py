"""Trace a model once into a graph of layers and operations, with shapes and multiply-accumulates.

The model runs one forward pass (batch 1, eval mode, no grad) under a ``TorchFunctionMode`` that sees
every tensor function called outside a leaf module (``+`` of a residual block, ``torch.cat`` of an
Inception module, ``flatten``, functional pooling), forward hooks on every leaf module, and a
``TorchDispatchMode`` that counts each node's multiply-accumulates with the formulas of
``torch.utils.flop_counter`` (MACs = FLOPs / 2). Because the model really runs, any control flow works,
and each tensor is followed to the node that produced it, so branches and merges are edges.

The model is left as it was: every module's training flag is restored, hooks removed, and nothing
runs in training mode (BatchNorm statistics and other buffers are untouched).
"""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from cnnlab.errors import CnnlabError

__all__ = ["Node", "Graph", "trace", "ShapeError", "ATOMIC_MODULES"]

# modules with children that are still one operation (their children's forward is never called)
ATOMIC_MODULES: tuple[type[nn.Module], ...] = (nn.MultiheadAttention,)

# tensor functions that never make a node: shape queries and the like (they return no tensor anyway,
# listed so that they skip the bookkeeping)
_QUIET = {"size", "dim", "numel", "__len__", "__get__", "__bool__", "__index__", "item", "tolist", "__format__",
          "stride", "is_contiguous", "data_ptr", "element_size", "requires_grad_", "__hash__", "__eq__",
          "__ne__", "__lt__", "__le__", "__gt__", "__ge__"}


class ShapeError(CnnlabError):
    """The model cannot take the input shape; names the first layer that fails."""


@dataclass
class Node:
    """One layer call or tensor operation.

    ``name``: the module's qualified name (``features.block1.conv1``), or for an operation the name of
    the module whose forward called it plus the function (``features.stage1.block1.add``); ``kind``:
    ``input``, ``module``, ``function`` or ``params`` (a container's own parameters, used directly);
    ``inputs``: indices of the nodes whose outputs it read; ``macs``: multiply-accumulates for one
    sample.
    """

    index: int
    name: str
    kind: str
    type: str
    inputs: list[int] = field(default_factory=list)
    output_shape: tuple[int, ...] | None = None  # without the batch dimension
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    module: nn.Module | None = None
    func: Any = None
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    macs: int = 0
    output_index: int = 0  # which element of a tuple output the edges refer to (per tensor, below)

    @property
    def depth(self) -> int:
        return self.name.count(".") + 1 if self.kind != "input" else 0


@dataclass
class Graph:
    model_name: str
    input_size: tuple[int, ...]
    nodes: list[Node]
    outputs: list[int]

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def _tensors(obj) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _strip(args):
    """Arguments with tensors replaced by their shapes (kept on the node for the receptive field)."""
    if isinstance(args, torch.Tensor):
        return tuple(args.shape)
    if isinstance(args, (list, tuple)):
        return type(args)(_strip(a) for a in args) if not hasattr(args, "_fields") else tuple(_strip(a) for a in args)
    if isinstance(args, dict):
        return {k: _strip(v) for k, v in args.items()}
    return args


class _MACs(TorchDispatchMode):
    """Multiply-accumulates of every counted aten op, added to ``self.total``."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out) // 2
        return out


class _Tracer(TorchFunctionMode):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.nodes: list[Node] = []
        self.producer: dict[int, int] = {}  # id(tensor) -> node index
        self.keep: list[torch.Tensor] = []  # keeps traced tensors alive, so ids are never reused
        self.leaf_depth = 0
        self.scope: list[str] = []
        self.counts: Counter = Counter()
        self.macs = _MACs()
        self.current: tuple[str, str, tuple] | None = None  # the leaf being run (for ShapeError)
        self.params_seen: set[int] = set()

    # -- bookkeeping ------------------------------------------------------------------------
    def add(self, name: str, kind: str, type_: str, inputs, output, **kw) -> Node:
        ins = []
        for t in inputs:
            i = self.producer.get(id(t))
            if i is not None and i not in ins:
                ins.append(i)
        outs = list(_tensors(output))
        node = Node(len(self.nodes), name, kind, type_, ins,
                    tuple(outs[0].shape[1:]) if outs else None,
                    [tuple(t.shape[1:]) for t in inputs], **kw)
        self.nodes.append(node)
        for t in outs:
            self.producer[id(t)] = node.index
            self.keep.append(t)
        return node

    def unique(self, name: str) -> str:
        """``name``, or ``name (2)``, ``name (3)``, ... for the second and later calls."""
        self.counts[name] += 1
        return name if self.counts[name] == 1 else f"{name} ({self.counts[name]})"

    # -- functions outside leaf modules --------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        fname = getattr(func, "__name__", str(func))
        if self.leaf_depth or fname in _QUIET:
            return func(*args, **kwargs)
        inputs = [t for t in _tensors((args, kwargs)) if id(t) in self.producer]
        if not inputs:
            return func(*args, **kwargs)
        before = self.macs.total
        scope = self.scope[-1] if self.scope else ""
        base = f"{scope}.{fname.strip('_')}" if scope else fname.strip("_")
        self.current = (base, fname.strip("_"), tuple(tuple(t.shape) for t in inputs))
        out = func(*args, **kwargs)
        self.current = None
        if not any(True for _ in _tensors(out)):
            return out
        name = self.unique(base)
        self.add(name, "function", fname.strip("_"), inputs, out, func=func, args=_strip(args),
                 kwargs=_strip(kwargs), macs=self.macs.total - before)
        return out

    # -- hooks --------------------------------------------------------------------------------
    def pre_hook(self, name: str, leaf: bool):
        def hook(module, args, kwargs):
            self.scope.append(name)
            direct = [p for p in module.parameters(recurse=False) if id(p) not in self.params_seen]
            if not leaf and direct:
                self.params_seen.update(id(p) for p in direct)
                self.nodes.append(Node(len(self.nodes), f"{name} (parameters)" if name else "(parameters)",
                                       "params", type(module).__name__, module=module))
            if leaf:
                self.leaf_depth += 1
                inputs = list(_tensors((args, kwargs)))
                self.current = (name, type(module).__name__, tuple(tuple(t.shape) for t in inputs))
                self.pending = [t for t in inputs if id(t) in self.producer]
                self.mac_start = self.macs.total
        return hook

    def post_hook(self, name: str, leaf: bool):
        def hook(module, args, kwargs, output):
            self.scope.pop()
            if leaf:
                self.leaf_depth -= 1
                self.params_seen.update(id(p) for p in module.parameters())
                self.add(self.unique(name) if name else "(model)", "module", type(module).__name__, self.pending,
                         output, module=module, macs=self.macs.total - self.mac_start)
                self.current = None
            return output
        return hook


def _leaves(model: nn.Module) -> Iterator[tuple[str, nn.Module, bool]]:
    """(name, module, is_leaf) for every module, not descending into atomic ones."""
    skip: list[str] = []
    for name, m in model.named_modules():
        if any(name.startswith(s + ".") for s in skip):
            continue
        atomic = isinstance(m, ATOMIC_MODULES)
        if atomic:
            skip.append(name)
        yield name, m, atomic or not any(True for _ in m.children())


def trace(model: nn.Module, input_size, *, device: str | torch.device | None = None,
          dtype: torch.dtype | None = None, model_name: str | None = None) -> Graph:
    """Run ``model`` once on a random input of shape ``(1, *input_size)`` and return its graph.

    The input takes the device and floating dtype of the model's first parameter (or buffer) unless
    ``device``/``dtype`` are given.

    Raises :class:`ShapeError` when the model cannot take the input, naming the first layer that fails.
    """
    input_size = tuple(int(v) for v in input_size)
    ref = next((t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()), None)
    device = device if device is not None else (ref.device if ref is not None else "cpu")
    dtype = dtype if dtype is not None else (ref.dtype if ref is not None else torch.float32)
    tracer = _Tracer(model)
    modes = {m: m.training for m in model.modules()}
    handles = []
    x = torch.randn((1, *input_size), device=device, dtype=dtype, generator=torch.Generator(device).manual_seed(0))
    try:
        for name, m, leaf in _leaves(model):
            handles.append(m.register_forward_pre_hook(tracer.pre_hook(name, leaf), with_kwargs=True))
            handles.append(m.register_forward_hook(tracer.post_hook(name, leaf), with_kwargs=True))
        model.eval()
        tracer.add("input", "input", "Input", [], x)
        with ExitStack() as stack, torch.no_grad():
            stack.enter_context(tracer.macs)
            stack.enter_context(tracer)
            try:
                out = model(x)
            except (RuntimeError, ValueError, IndexError, TypeError) as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                where = tracer.current
                if where is None:
                    raise ShapeError(f"{model_name or type(model).__name__} cannot take input "
                                     f"{list(input_size)}: {msg}") from None
                lname, ltype, shapes = where
                what = "layer" if tracer.leaf_depth else "operation"
                raise ShapeError(f"{model_name or type(model).__name__} cannot take input {list(input_size)}: "
                                 f"{what} {lname or '(model)'} ({ltype}) failed on input of shape "
                                 f"{', '.join(str(list(s)) for s in shapes)}: {msg}") from None
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    outs = sorted({tracer.producer[id(t)] for t in _tensors(out) if id(t) in tracer.producer})
    return Graph(model_name or type(model).__name__, input_size, tracer.nodes, outs)
