"""Binarization: Binary-Weight-Networks and XNOR-Nets (Rastegari et al. 2016, arXiv:1603.05279).

:func:`compress_binarize` replaces every ``nn.Conv2d`` / ``nn.Linear`` of a trained model, except (by
default) the first and the last in forward order, with :class:`~cnnlab.layers.BinaryConv2d` /
:class:`~cnnlab.layers.BinaryLinear` carrying the trained weights as their latent weights, fine-tunes
(the latent weights train through the straight-through estimator), and stores each binarized layer as
its sign bits (1 bit per weight, :func:`~cnnlab.compress.storage.pack_bits`) plus one float32 ``alpha``
per output channel; every other tensor of the state dict is stored as float32.

The first and last layers stay float, as in XNOR-Net's PyTorch port (it binarizes layers 1 to n - 2) and
most binarization work since: the first sees the image (1 channel here, 9 weights per filter: binarizing
it saves almost nothing and costs the most accuracy), the last produces the logits.

Forward order and each layer's producer come from a ``torch.fx`` trace of the model in which every
module without children is a leaf (so cnnlab's ``Dropout``, whose ``forward`` branches on the training
flag, is one node); a model fx cannot trace is a :class:`~cnnlab.compress.base.CompressError`.

``mode="xnor"`` binarizes the inputs too, which needs inputs that can be negative: a layer whose input
is a ReLU's output (through pooling, dropout, flattening, channel shuffles, sums and concatenations of
such outputs) would see ``sign(x) = +1`` everywhere, a constant that carries no information. Such a
layer is refused with a :class:`~cnnlab.compress.base.CompressError` naming it and the ReLU. The paper's
remedy is its block order BatchNorm -> BinActiv -> BinConv -> Pool, which a post-training swap cannot
impose without changing the trained function; a learned threshold (``sign(x - t)``, ReActNet's RSign) is
not in the paper, and silently running such layers as BWN would report BWN numbers under the XNOR name.
cnnlab's fmnist-cnn is Keras-ordered (conv -> ReLU -> BatchNorm): every layer XNOR binarizes there is
fed by a BatchNorm (the report's ``input_from``), so XNOR runs on it; VGG, ResNet, gap-cnn and the MLP
feed their convs and dense layers from ReLUs and are refused.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.compress.base import CompressError, Compressed, Finetune
from cnnlab.compress.storage import pack_bits, unpack_bits
from cnnlab.layers import BINARY_MODES, BinaryConv2d, BinaryLinear, ChannelShuffle, binarize_weight, weight_scale

__all__ = ["compress_binarize", "rebuild_binarize"]

_SIGN = ".weight.sign"  # stored key suffixes of a binarized layer: packed sign bits (1 = +1) ...
_ALPHA = ".weight.alpha"  # ... and its per-output-channel scale, float32

# the sign of every element is kept by these (they select, average, reorder or reshape)
_SIGN_PRESERVING_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
                            nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                            nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout,
                            nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Flatten, nn.Unflatten, nn.Identity,
                            ChannelShuffle)
_SIGN_PRESERVING_FUNCTIONS = {torch.flatten, torch.reshape, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
                              F.adaptive_max_pool2d, F.dropout}
_SIGN_PRESERVING_METHODS = {"view", "reshape", "flatten", "contiguous", "permute", "transpose", "squeeze",
                            "unsqueeze"}
_NONNEGATIVE_MODULES = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Softmax, nn.Hardsigmoid, nn.Softplus)
_NONNEGATIVE_FUNCTIONS = {torch.relu, F.relu, F.relu6, torch.sigmoid, torch.softmax, F.softmax}
_NONNEGATIVE_METHODS = {"relu", "sigmoid", "softmax"}
_SUMS = {operator.add, torch.add, torch.cat}  # non-negative if all their tensor inputs are


class _LeafTracer(fx.Tracer):
    """Every module without children is one node (its forward may branch on Python values)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return next(m.children(), None) is None or super().is_leaf_module(m, module_qualified_name)


def _trace(model: nn.Module) -> fx.Graph:
    try:
        return _LeafTracer().trace(model)
    except Exception as e:  # fx raises TraceError, TypeError, NotImplementedError, ... for what it cannot follow
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CompressError(f"cannot trace {type(model).__name__} with torch.fx to find its layers' forward "
                            f"order: {first}") from None


def _layers_in_forward_order(model: nn.Module, graph: fx.Graph) -> list[str]:
    names: list[str] = []
    for node in graph.nodes:
        if (node.op == "call_module" and node.target not in names
                and isinstance(model.get_submodule(node.target), (nn.Conv2d, nn.Linear))):
            names.append(node.target)
    return names


def _describe(model: nn.Module, node: fx.Node) -> str:
    if node.op == "call_module":
        return f"{type(model.get_submodule(node.target)).__name__} {node.target}"
    if node.op == "placeholder":
        return "the model's input"
    return f"{getattr(node.target, '__name__', node.target)} ({node.name})"


def _input_source(model: nn.Module, node: fx.Node) -> tuple[str, bool]:
    """Where the tensor ``node`` comes from, past sign-preserving ops, and whether it is never negative."""
    while True:
        if node.op == "call_module":
            module = model.get_submodule(node.target)
            if isinstance(module, _NONNEGATIVE_MODULES):
                return _describe(model, node), True
            if not isinstance(module, _SIGN_PRESERVING_MODULES):
                return _describe(model, node), False
        elif node.op == "call_function" and node.target in _NONNEGATIVE_FUNCTIONS:
            return _describe(model, node), True
        elif node.op == "call_method" and node.target in _NONNEGATIVE_METHODS:
            return _describe(model, node), True
        elif node.op == "call_function" and node.target in _SUMS:
            sources = [_input_source(model, a) for a in node.all_input_nodes]
            constants = node.target is not torch.cat and any(not isinstance(a, fx.Node) for a in node.args)
            nonnegative = bool(sources) and not constants and all(nonneg for _, nonneg in sources)
            return f"{_describe(model, node)} of {', '.join(s for s, _ in sources)}", nonnegative
        elif not ((node.op == "call_function" and node.target in _SIGN_PRESERVING_FUNCTIONS)
                  or (node.op == "call_method" and node.target in _SIGN_PRESERVING_METHODS)):
            return _describe(model, node), False
        node = node.args[0]


def _layer_inputs(model: nn.Module, graph: fx.Graph, name: str) -> list[tuple[str, bool]]:
    """:func:`_input_source` of every call of layer ``name`` (a shared layer is called more than once)."""
    return [_input_source(model, node.args[0]) for node in graph.nodes
            if node.op == "call_module" and node.target == name]


def _binary_from_float(module: nn.Module, mode: str, name: str) -> BinaryConv2d | BinaryLinear:
    cls = BinaryConv2d if isinstance(module, nn.Conv2d) else BinaryLinear
    try:
        return cls.from_float(module, mode)
    except TypeError as e:
        raise CompressError(f"cannot binarize layer {name}: {e}") from None


def _check_settings(mode: str, finetune: Finetune | None, finetune_epochs: int) -> None:
    if mode not in BINARY_MODES:
        raise CompressError(f"mode must be one of {', '.join(map(repr, BINARY_MODES))}; got {mode!r}")
    if not isinstance(finetune_epochs, int) or isinstance(finetune_epochs, bool) or finetune_epochs < 0:
        raise CompressError(f"finetune_epochs must be an integer >= 0; got {finetune_epochs!r}")
    if finetune_epochs and finetune is None:
        raise CompressError(f"finetune_epochs={finetune_epochs} needs a finetune callable; got finetune=None")


def compress_binarize(model: nn.Module, *, mode: str = "bwn", keep_first_last: bool = True,
                      finetune: Finetune | None = None, finetune_epochs: int = 0) -> Compressed:
    """Binarize ``model``'s convolutions and dense layers (``mode``: ``"bwn"`` binary weights,
    ``"xnor"`` binary weights and inputs), keeping the first and last in forward order float unless
    ``keep_first_last=False``; then ``finetune(model, finetune_epochs)``. Modifies ``model``.

    After fine-tuning each latent weight is set to its binarization ``alpha * sign(W)`` (which
    binarizes to itself, bit for bit), so the returned model is exactly what :func:`rebuild_binarize`
    makes of the stored sign bits and scales.

    Raises :class:`~cnnlab.compress.base.CompressError` for a bad setting, a model fx cannot trace, one
    with nothing left to binarize, a layer that is a ``Conv2d`` / ``Linear`` subclass with its own
    forward (e.g. a pre-defined sparse conv, whose zeros binarization would fill) and, for ``"xnor"``, a
    layer whose input is never negative (module docstring).
    """
    _check_settings(mode, finetune, finetune_epochs)
    graph = _trace(model)
    order = _layers_in_forward_order(model, graph)
    if not order:
        raise CompressError(f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer to binarize")
    float_layers: dict[str, str] = {}
    if keep_first_last:
        first = model.get_submodule(order[0])
        inputs = f"{first.in_channels} channel(s)" if isinstance(first, nn.Conv2d) else f"{first.in_features} features"
        float_layers[order[0]] = (f"first layer in forward order: it sees the raw input ({inputs}), where binarizing "
                                  "costs the most accuracy; kept float as XNOR-Net does")
        float_layers.setdefault(order[-1], "last layer in forward order: it produces the logits; kept float as "
                                           "XNOR-Net does")
    targets = [name for name in order if name not in float_layers]
    if not targets:
        raise CompressError(f"nothing to binarize: {type(model).__name__}'s layers ({', '.join(order)}) are only "
                            "its first and last, which stay float; keep_first_last=False binarizes them")

    sources = {name: _layer_inputs(model, graph, name) for name in targets}
    if mode == "xnor":
        refused = [(name, src) for name in targets for src, nonneg in sources[name] if nonneg]
        if refused:
            (name, src), more = refused[0], len({n for n, _ in refused}) - 1
            raise CompressError(
                f"mode 'xnor' cannot binarize the input of layer {name}: it comes from {src} and is never "
                "negative, so sign(x) is +1 everywhere"
                + (f" ({more} more layer{'s' if more > 1 else ''} alike)" if more else "")
                + "; use mode='bwn', or a model with BatchNorm after the activation (fmnist-cnn's order)")

    for name in targets:
        model.set_submodule(name, _binary_from_float(model.get_submodule(name), mode, name))
    history = finetune(model, finetune_epochs) if finetune_epochs else []

    tensors: dict[str, torch.Tensor] = {}
    layers_meta: dict[str, list[int]] = {}
    layer_report = []
    with torch.no_grad():
        for name in targets:
            layer = model.get_submodule(name)
            weight = layer.weight
            alpha = weight_scale(weight)
            tensors[name + _SIGN] = pack_bits((weight >= 0).to(torch.uint8).cpu(), bits=1)
            tensors[name + _ALPHA] = alpha.detach().to(torch.float32).cpu()
            weight.copy_(binarize_weight(weight))
            layers_meta[name] = list(weight.shape)
            float_bytes = 4 * weight.numel()
            stored = tensors[name + _SIGN].numel() + 4 * alpha.numel()
            layer_report.append({
                "layer": name, "type": type(layer).__name__, "mode": mode, "bits": 1, "weights": weight.numel(),
                "weight_bytes_float32": float_bytes, "weight_bytes_stored": stored,
                "ratio": round(float_bytes / stored, 2),
                "input_from": "; ".join(src for src, _ in sources[name]),
            })
    binarized = {name + ".weight" for name in targets}
    for key, value in model.state_dict().items():
        if key not in binarized:
            value = value.detach().cpu()
            tensors[key] = value.to(torch.float32, copy=True) if value.is_floating_point() else value.clone()

    before = sum(r["weight_bytes_float32"] for r in layer_report)
    after = sum(r["weight_bytes_stored"] for r in layer_report)
    report = {
        "mode": mode,
        "binarized": layer_report,
        "float_layers": [{"layer": name, "reason": why} for name, why in float_layers.items()],
        "binarized_weight_bytes_float32": before,
        "binarized_weight_bytes_stored": after,
        "binarized_weight_ratio": round(before / after, 2),
        "finetune_epochs": finetune_epochs,
        "finetune_history": history,
    }
    meta = {"mode": mode, "layers": layers_meta}
    return Compressed(model.eval(), tensors, meta, report)


def rebuild_binarize(base: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> nn.Module:
    """``base`` (a freshly built model of the compressed one's architecture) with the layers named in
    ``meta["layers"]`` made binary and every latent weight set to ``alpha * sign`` from the stored bits:
    the model :func:`compress_binarize` returned, to the bit. Returns ``base``, in eval mode."""
    mode, layers = meta.get("mode"), meta.get("layers")
    if mode not in BINARY_MODES or not isinstance(layers, dict):
        raise CompressError(f"not a binarize artifact: meta mode {mode!r} (valid: {', '.join(BINARY_MODES)}) "
                            f"and layers {type(layers).__name__} (valid: a dict of layer name -> weight shape)")
    state = {k: v for k, v in tensors.items() if not k.endswith((_SIGN, _ALPHA))}
    for name, shape in layers.items():
        try:
            module = base.get_submodule(name)
        except AttributeError:
            raise CompressError(f"layer {name} of the artifact is not in {type(base).__name__}") from None
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or list(module.weight.shape) != list(shape):
            raise CompressError(f"layer {name}: the artifact has a weight of shape {list(shape)}, the model a "
                                f"{type(module).__name__}" + (f" of {list(module.weight.shape)}"
                                                              if hasattr(module, "weight") else ""))
        binary = _binary_from_float(module, mode, name)
        try:
            bits, alpha = tensors[name + _SIGN], tensors[name + _ALPHA]
        except KeyError as e:
            raise CompressError(f"layer {name}: the artifact lacks tensor {e.args[0]}") from None
        positive = unpack_bits(bits, 1, math.prod(shape)).view(shape).bool()
        alpha = alpha.to(torch.float32).view(-1, *([1] * (len(shape) - 1)))
        state[name + ".weight"] = torch.where(positive, alpha, -alpha)
        base.set_submodule(name, binary)
    try:
        base.load_state_dict(state)
    except RuntimeError as e:
        raise CompressError(f"the artifact does not fit {type(base).__name__}: "
                            f"{' '.join(str(e).split())}") from None
    return base.eval()
