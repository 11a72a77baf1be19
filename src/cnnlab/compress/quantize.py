"""int8 static post-training quantization for the CPU (the lecture's "quantization": 32-bit floats to 8-bit
integers, about 4x smaller and faster integer arithmetic), calibrated on training images.

Weights become int8 (symmetric, one scale per output channel by default), activations uint8 with one
scale and zero point per tensor, found by running ``calibration`` batches through observers (a histogram
observer that minimises the quantization error, the x86 default). Convolutions and dense layers run as
int8 kernels (fbgemm/oneDNN via PyTorch's ``x86`` quantized engine) with their following ReLU fused in;
the model quantizes its float input on entry and dequantizes its logits on exit, so it takes and returns
what the float model did.

Which PyTorch API, in torch 2.14.1, without ``torch.compile`` (fmnist-cnn, batch 256, 2 threads, 2-core
EPYC shared with other jobs; one-off experiments during development that chose the API, not results:
bench/RESULTS.md has those):

- ``torch.ao.quantization`` FX graph mode (``prepare_fx``/``convert_fx``), used here: 115 ms against the
  float model's 276 ms in the same run. It warns that it is deprecated ("will be removed in 2.10", yet
  present in 2.14.1), and so are the quantized dtypes (``torch.quint8``, ``torch.qint8``;
  pytorch/pytorch#184982) its modules compute with. cnnlab pins torch 2.14.1, where both work; the two
  warnings are silenced inside this module's own calls and nowhere else.
- torchao 0.18 pt2e (``prepare_pt2e``/``convert_pt2e`` with ``X86InductorQuantizer``), the named
  successor: its converted model is a float graph with quantize/dequantize nodes around float convs, for
  Inductor to fuse; run eagerly it took 1494 ms against the float model's 640 ms (2.3x slower).
  ``lower_pt2e_quantized_to_x86`` (its eager lowering to oneDNN int8 ops) exports with a fixed batch
  size and failed at run time on this model ("view size is not compatible"); an exported model also
  refuses ``model.eval()``, which :func:`cnnlab.train.evaluate` calls.
- Eager mode (``torch.ao.quantization.prepare``/``convert``): the same kernels and deprecation as FX,
  but stubs and ``FloatFunctional`` must be written into each model's ``forward`` (resnet-small's
  residual adds); FX graph mode finds the adds itself.

Graph rewrites before quantizing, all exact in float:

- dropout (eval: the identity) is removed; ``nn.Conv2d`` subclasses that only add construction checks
  (depthwise, grouped, pointwise convs) become plain ``nn.Conv2d`` (FX only matches the torch classes);
  :class:`~cnnlab.layers.PredefinedSparseConv2d` becomes a dense ``nn.Conv2d`` holding its masked weight
  (an int8 dense kernel: zeros stay zeros, but none are skipped); ``nn.Flatten`` becomes ``torch.flatten``,
  which FX keeps on int8 tensors (as a module it would dequantize and quantize again);
- conv -> BatchNorm: FX folds the BN into the conv (conv-BN-ReLU fusion);
- conv -> ReLU -> BatchNorm (cnnlab's Keras-ordered ``fmnist-cnn``): the BN is ``y = s relu(z) + t`` per
  channel. With every ``s >= 0``, ``s relu(z) = relu(s z)``: ``s`` scales the output channels of the
  layer computing ``z`` (per-channel int8 weights absorb that exactly), and ``t``, a per-channel
  constant, joins the bias of the next dense layer or unpadded conv, through max pooling, average
  pooling and flattening (each passes a per-channel constant through). Not into a *padded* conv: there
  the zeros padded around ``x + t`` would have to be ``t``, so the border outputs would change. Such a
  BN stays a quantized BatchNorm (int8 scale and shift, ``quantized::batch_norm2d``: 7% of the int8
  fmnist-cnn's time on one thread), moved after the max pool that follows it when every ``s >= 0``
  (exact: max commutes with an increasing map; it then touches 4x fewer values). fmnist-cnn: block 2's
  last BN and the head's BN are split (into ``conv2``/``fc1`` and ``fc1``/``fc2``), block 1's last BN runs
  after its pool, two BNs stay quantized BNs. The split is only done with per-channel weights (see
  :func:`_batchnorm_plan`). Folding the whole BN into the next layer instead (``s`` into its input
  columns) is exact in float too, but it took fmnist-cnn to 10% accuracy: the head BN's ``s`` reaches 307
  on units that never fire (running variance ~0), and those columns set fc2's per-row weight scales.

Accuracy, artifact size and speed-up on the trained fmnist-cnn: see bench/RESULTS.md (measured by
``bench/compress_fmnist.py``, 2,048 calibration images as :mod:`cnnlab.compress.run` takes them); the
figures are kept there only, so that they do not drift from the measurement.

What is stored (plain tensors, nothing pickled): the quantized model's ``state_dict`` with each quantized
tensor split into its int8/uint8 values, its scales (float64, as PyTorch keeps them) and zero points;
biases, BatchNorm statistics and activation scales as they are. :func:`rebuild_quantize` repeats the
same rewrites (replaying the stored BatchNorm plan) and ``prepare_fx``/``convert_fx`` on the untrained
``base`` and loads those tensors: the same int8 values and scales give the same packed weights, so its
outputs equal ``Compressed.model``'s bit for bit.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from itertools import chain
from typing import Any, Iterator

import torch
import torch.nn as nn
from torch.ao.quantization import HistogramObserver, MinMaxObserver, QConfig, get_default_qconfig_mapping
from torch.ao.quantization.observer import (ObserverBase, default_per_channel_weight_observer,
                                            default_weight_observer)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
from torch.fx import GraphModule, Node, Tracer
from torch.fx.passes.shape_prop import ShapeProp

from cnnlab.compress.base import Calibration, CompressError, Compressed
from cnnlab.layers import PredefinedSparseConv2d

__all__ = ["BACKENDS", "QuantizedModel", "compress_quantize", "rebuild_quantize"]

#: Quantized engines cnnlab accepts; ``x86`` (fbgemm or oneDNN kernels per layer) is PyTorch's default on x86.
BACKENDS = ("x86", "fbgemm", "onednn", "qnnpack")

_FORMAT = 1  # the meta layout version

#: Activations use 7 of their 8 bits on the x86 engines (PyTorch's default): fbgemm's u8 x s8 multiply
#: accumulates pairs in 16 bits, which overflows at full range on CPUs without VNNI.
_ACTIVATION_RANGE = {"x86": (0, 127), "fbgemm": (0, 127), "onednn": (0, 255), "qnnpack": (0, 255)}

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d)


class QuantizedModel(nn.Module):
    """The converted FX graph (``graph``) behind a float-in, float-out face: a 4D input is made
    channels-last when the model has convolutions (the int8 convs compute in NHWC; NCHW input cost a
    layout conversion per conv: 212 ms against 115 ms for fmnist-cnn at batch 256, 2 threads)."""

    def __init__(self, graph: GraphModule, channels_last: bool) -> None:
        super().__init__()
        self.graph = graph
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.graph(x)


# --------------------------------------------------------------------------------------------------
# public API


def compress_quantize(model: nn.Module, *, calibration: Calibration, backend: str = "x86",
                      per_channel: bool = True) -> Compressed:
    """int8 static post-training quantization of ``model`` (modified in place), activation ranges
    calibrated on ``calibration`` (float input batches, normalised as in training).

    ``backend``: the quantized engine to pack weights for, one of :data:`BACKENDS`. ``per_channel``: one
    weight scale per output channel (else one per layer). Raises :class:`CompressError` for a bad
    setting, an empty calibration, or a model with a layer that cannot be traced or has no int8 kernel.
    """
    _check_settings(backend, per_channel)
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise CompressError("calibration is empty; give a few thousand training images as float batches")
    _check_batch(first)
    example = first[:1]
    model.eval()
    graph, plan = _float_graph(model, example, plan=None, split=per_channel)
    channels_last = any(isinstance(m, nn.Conv2d) for m in graph.modules())
    images = 0
    with _torch_ao(backend):
        observed = prepare_fx(graph, _qconfig_mapping(backend, per_channel), (example,))
        with torch.no_grad():
            for x in chain([first], batches):
                _check_batch(x)
                observed(x)
                images += len(x)
        converted = convert_fx(observed)
    _check_quantized(converted, backend)
    qmodel = QuantizedModel(converted, channels_last).eval()
    tensors, layout = _encode_state(qmodel.state_dict())
    meta = {"format": _FORMAT, "backend": backend, "per_channel": per_channel,
            "input_shape": list(example.shape[1:]), "channels_last": qmodel.channels_last, "plan": plan,
            "state": layout}
    report = {"backend": backend, "weights": f"int8, {'per-channel' if per_channel else 'per-tensor'} symmetric",
              "activations": _activation_text(backend), "calibration_images": images,
              "input_memory_format": "channels_last" if qmodel.channels_last else "as given",
              **_describe(converted, plan, backend)}
    return Compressed(qmodel, tensors, meta, report)


def rebuild_quantize(base: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> nn.Module:
    """The model :func:`compress_quantize` returned, from a fresh float ``base`` of the same architecture
    and the stored ``tensors`` and ``meta`` (bit-identical outputs)."""
    if meta.get("format") != _FORMAT:
        raise CompressError(f"quantize artifact format {meta.get('format')!r}; this cnnlab reads {_FORMAT}")
    backend, per_channel = meta["backend"], meta["per_channel"]
    _check_settings(backend, per_channel)
    example = torch.zeros(1, *meta["input_shape"])
    base.eval()
    graph, _ = _float_graph(base, example, plan=meta["plan"])
    with _torch_ao(backend):
        # the structure only: every value is replaced below (a min/max observer, as the histogram's
        # search took 1.5 s on the one zero batch)
        observed = prepare_fx(graph, _qconfig_mapping(backend, per_channel, MinMaxObserver), (example,))
        with torch.no_grad():
            observed(example)
        converted = convert_fx(observed)
        qmodel = QuantizedModel(converted, meta["channels_last"])
        state = _decode_state(tensors, meta["state"])
        state._metadata = qmodel.state_dict()._metadata  # module versions: quantized modules load by them
        try:
            qmodel.load_state_dict(state)
        except (RuntimeError, KeyError) as e:
            raise CompressError(f"the quantize artifact does not fit this {type(base).__name__} "
                                f"({str(e).splitlines()[0]})") from None
    return qmodel.eval()


# --------------------------------------------------------------------------------------------------
# settings and torch.ao plumbing


def _check_settings(backend: Any, per_channel: Any) -> None:
    supported = [b for b in BACKENDS if b in torch.backends.quantized.supported_engines]
    if backend not in supported:
        raise CompressError(f"backend {backend!r} is not a quantized engine of this PyTorch; valid: "
                            f"{', '.join(supported)}")
    if not isinstance(per_channel, bool):
        raise CompressError(f"per_channel must be true or false; got {per_channel!r}")


def _check_batch(x: Any) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2 or len(x) == 0:
        what = f"a {x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise CompressError(f"calibration batches must be non-empty float tensors (N, C, H, W); got {what}")


@contextlib.contextmanager
def _torch_ao(backend: str) -> Iterator[None]:
    """``backend`` as the quantized engine (weights are packed for the engine current at conversion),
    with the two deprecation warnings of this API (see the module docstring) silenced."""
    before = torch.backends.quantized.engine
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
        torch.backends.quantized.engine = backend
        try:
            yield
        finally:
            torch.backends.quantized.engine = before


def _qconfig_mapping(backend: str, per_channel: bool, observer: type[ObserverBase] = HistogramObserver):
    """PyTorch's default PTQ mapping for ``backend`` with its activation observer (a histogram, range
    given as quant_min/max rather than the deprecated ``reduce_range``) and the chosen weight observer.
    ``observer``: another activation observer of the same range gives the same structure (rebuild)."""
    qmin, qmax = _ACTIVATION_RANGE[backend]
    qconfig = QConfig(activation=observer.with_args(dtype=torch.quint8, quant_min=qmin, quant_max=qmax),
                      weight=default_per_channel_weight_observer if per_channel else default_weight_observer)
    return get_default_qconfig_mapping(backend).set_global(qconfig)


def _activation_text(backend: str) -> str:
    qmin, qmax = _ACTIVATION_RANGE[backend]
    return f"uint8 per-tensor affine, range [{qmin}, {qmax}], histogram-calibrated"


# --------------------------------------------------------------------------------------------------
# the float graph: tracing, plain layers, BatchNorm folding


class _LayerError(Exception):
    def __init__(self, name: str, module: nn.Module, cause: Exception) -> None:
        super().__init__(f"layer {name} ({type(module).__name__}) cannot be traced for quantization: "
                         f"{str(cause).splitlines()[0]}")


class _Tracer(Tracer):
    """torch.fx's tracer, with dropout modules (cnnlab's included) as leaves and the failing layer named."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, nn.modules.dropout._DropoutNd) or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        try:
            return super().call_module(m, forward, args, kwargs)
        except _LayerError:
            raise
        except Exception as e:  # noqa: BLE001 -- any tracing failure inside a layer is reported as that layer's
            raise _LayerError(self.path_of_module(m) or type(m).__name__, m, e) from e


def _plain(m: nn.Conv2d | nn.Linear) -> nn.Conv2d | nn.Linear:
    """``m`` as the torch class it subclasses, same weights (a sparse conv's masked ones)."""
    if isinstance(m, nn.Conv2d):
        plain = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                          m.bias is not None, m.padding_mode)
    else:
        plain = nn.Linear(m.in_features, m.out_features, m.bias is not None)
    with torch.no_grad():
        plain.weight.copy_(m.weight * m.mask if isinstance(m, PredefinedSparseConv2d) else m.weight)
        if m.bias is not None:
            plain.bias.copy_(m.bias)
    return plain


def _plain_layers(model: nn.Module) -> None:
    """Replace conv and dense subclasses by their torch class (see the module docstring), in place; a
    subclass with its own arithmetic (a ``forward`` of its own) is a :class:`CompressError`."""
    for parent_name, parent in list(model.named_modules()):
        for name, child in parent.named_children():
            base = nn.Conv2d if isinstance(child, nn.Conv2d) else nn.Linear if isinstance(child, nn.Linear) else None
            if base is None or type(child) is base:
                continue
            if type(child).forward is not base.forward and not isinstance(child, PredefinedSparseConv2d):
                layer = f"{parent_name}.{name}" if parent_name else name
                raise CompressError(f"layer {layer} ({type(child).__name__}) computes its own forward; it has no "
                                    "int8 kernel")
            setattr(parent, name, _plain(child))


def _float_graph(model: nn.Module, example: torch.Tensor, plan: list[dict[str, Any]] | None,
                 split: bool = True) -> tuple[GraphModule, list[dict[str, Any]]]:
    """``model`` traced, with the exact rewrites of the module docstring. ``plan``: the BatchNorm moves to
    replay (rebuild); None decides them from the model's values (compress) and returns them, splitting
    BatchNorms into the layers around them only if ``split`` (see :func:`_batchnorm_plan`)."""
    _plain_layers(model)
    try:
        graph = _Tracer().trace(model)
    except _LayerError as e:
        raise CompressError(str(e)) from None
    except Exception as e:  # noqa: BLE001 -- e.g. control flow on a traced value in the model's own forward
        raise CompressError(f"{type(model).__name__} cannot be traced for quantization: "
                            f"{str(e).splitlines()[0]}") from None
    gm = GraphModule(model, graph, type(model).__name__).eval()
    for node in list(gm.graph.nodes):
        mod = _module(gm, node)
        if isinstance(mod, (nn.Identity, nn.modules.dropout._DropoutNd)):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
        elif isinstance(mod, nn.Flatten):
            with gm.graph.inserting_after(node):
                flat = gm.graph.call_function(torch.flatten, (node.args[0], mod.start_dim, mod.end_dim))
            node.replace_all_uses_with(flat)
            gm.graph.erase_node(node)
    gm.recompile()
    ShapeProp(gm).propagate(example)
    plan = _batchnorm_plan(gm, split) if plan is None else plan
    for step in plan:
        _apply(gm, step)
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm, plan


def _module(gm: GraphModule, node: Node) -> nn.Module | None:
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm in eval mode as ``y = s * x + t`` per channel (float64)."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    s = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.detach().double()
    t = -mean * s
    if bn.bias is not None:
        t = t + bn.bias.detach().double()
    return s, t


def _is_flatten1(node: Node) -> bool:
    """``torch.flatten(x, 1)`` (the rewritten ``nn.Flatten()``): (N, C, ...) to (N, features)."""
    if node.op != "call_function" or node.target is not torch.flatten:
        return False
    args = node.args[1:]
    start = args[0] if args else node.kwargs.get("start_dim", 0)
    end = args[1] if len(args) > 1 else node.kwargs.get("end_dim", -1)
    return start == 1 and end == -1


def _is_relu(node: Node, gm: GraphModule) -> bool:
    return isinstance(_module(gm, node), nn.ReLU) or (
        node.op == "call_function" and node.target in (torch.relu, torch.nn.functional.relu))


def _scale_source(gm: GraphModule, bn_node: Node) -> Node | None:
    """The conv or dense layer of a ``layer -> ReLU -> bn_node`` chain (each feeding only the next), whose
    output channels are the BN's channels; None if there is no such chain."""
    relu = bn_node.args[0]
    if not isinstance(relu, Node) or not _is_relu(relu, gm) or len(relu.users) != 1:
        return None
    layer = relu.args[0]
    mod = _module(gm, layer) if isinstance(layer, Node) else None
    if len(getattr(layer, "users", ())) != 1 or type(mod) not in (nn.Conv2d, nn.Linear):
        return None
    if type(mod) is nn.Linear and len(layer.meta["tensor_meta"].shape) != 2:
        return None  # a dense layer over the last axis of a map: its outputs are not the BN's channels
    return layer


def _shift_target(gm: GraphModule, bn_node: Node) -> tuple[Node, list[str]] | None:
    """The dense layer or unpadded conv that a per-channel constant added by ``bn_node`` reaches unchanged
    but for pooling and flattening (max and average both pass a per-channel constant through), and the
    layers passed on the way; None if there is none (a padded conv: the border would differ; two users)."""
    node, via, flat = bn_node, [], len(bn_node.meta["tensor_meta"].shape) == 2
    while len(node.users) == 1:
        node = next(iter(node.users))
        mod = _module(gm, node)
        if isinstance(mod, (nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
            via.append(node.target)
        elif _is_flatten1(node):
            flat, via = True, via + ["flatten"]
        elif type(mod) is nn.Linear and flat and len(node.args[0].meta["tensor_meta"].shape) == 2:
            return node, via
        elif type(mod) is nn.Conv2d and not flat and mod.groups == 1 and tuple(mod.padding) == (0, 0):
            return node, via
        else:
            return None
    return None


def _batchnorm_plan(gm: GraphModule, split: bool) -> list[dict[str, Any]]:
    """What to do with each BatchNorm that follows a ReLU (a BN after a conv or dense layer is fused into
    it by ``prepare_fx``): split it into the layers around it, move it after a max pool, or leave it.

    ``split`` only with per-channel weights: the scales differ by 1000x across channels (fmnist-cnn's
    head BN: 0.027 to 307, on units that never fire), and one weight scale per layer then rounds the
    other channels' weights to zero (10% accuracy, measured)."""
    plan = []
    for node in gm.graph.nodes:
        bn = _module(gm, node)
        if not isinstance(bn, nn.modules.batchnorm._BatchNorm) or bn.running_mean is None:
            continue
        src = node.args[0]
        if isinstance(_module(gm, src), _WEIGHTED) and len(src.users) == 1:
            continue  # conv/dense -> BN: prepare_fx folds it into the layer
        nonneg = bool((_affine(bn)[0] >= 0).all())
        source = _scale_source(gm, node) if nonneg and split else None
        target = _shift_target(gm, node) if source is not None else None
        if target is not None:
            plan.append({"bn": node.target, "scale_into": source.target, "shift_into": target[0].target,
                         "via": target[1]})
        elif nonneg and len(node.users) == 1 and isinstance(_module(gm, next(iter(node.users))), nn.MaxPool2d):
            plan.append({"bn": node.target, "after": next(iter(node.users)).target})
    return plan


def _node(gm: GraphModule, target: str) -> Node:
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.target == target:
            return node
    raise CompressError(f"the quantize plan names layer {target}, which this model does not have")


def _apply(gm: GraphModule, step: dict[str, Any]) -> None:
    """Split a BatchNorm ``y = s x + t`` (``x = relu(z)``, every ``s >= 0``) into the layers around it:
    ``s relu(z) = relu(s z)`` scales the output channels of the layer computing ``z`` (per-channel int8
    weights absorb that exactly), and ``t`` joins the next layer's bias. Or move it after a max pool."""
    bn_node = _node(gm, step["bn"])
    if "after" in step:
        pool = _node(gm, step["after"])
        if list(bn_node.users) != [pool]:
            raise CompressError(f"the quantize plan moves {step['bn']} after {step['after']}, which does not follow it")
        pool.replace_input_with(bn_node, bn_node.args[0])
        pool.replace_all_uses_with(bn_node)
        bn_node.args = (pool,)
        pool.append(bn_node)
        return
    source, target = _scale_source(gm, bn_node), _shift_target(gm, bn_node)
    if source is None or target is None or (source.target, target[0].target) != (step["scale_into"],
                                                                              step["shift_into"]):
        raise CompressError(f"the quantize plan splits {step['bn']} into {step['scale_into']} and "
                            f"{step['shift_into']}, which do not surround it")
    s, t = _affine(gm.get_submodule(step["bn"]))
    first, last = gm.get_submodule(step["scale_into"]), gm.get_submodule(step["shift_into"])
    shape = (-1,) + (1,) * (first.weight.dim() - 1)
    first.weight = nn.Parameter((first.weight.detach().double() * s.view(shape)).float())
    if first.bias is not None:
        first.bias = nn.Parameter((first.bias.detach().double() * s).float())
    w = last.weight.detach().double()
    if isinstance(last, nn.Linear):  # each channel repeats over the positions flattened into its features
        shift = w @ t.repeat_interleave(w.shape[1] // len(t))
    else:
        shift = (w * t.view(1, -1, 1, 1)).sum((1, 2, 3))
    last.bias = nn.Parameter((shift if last.bias is None else last.bias.detach().double() + shift).float())
    bn_node.replace_all_uses_with(bn_node.args[0])
    gm.graph.erase_node(bn_node)


# --------------------------------------------------------------------------------------------------
# the converted model: checks, report, state as plain tensors


def _is_quantized(m: nn.Module) -> bool:
    return type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))


def _float_nodes(converted: GraphModule) -> Iterator[tuple[Node, nn.Module]]:
    """Layers that run in float: their input is a ``dequantize``."""
    for node in converted.graph.nodes:
        mod = _module(converted, node)
        if mod is not None and not _is_quantized(mod) and any(
                isinstance(a, Node) and a.op == "call_method" and a.target == "dequantize" for a in node.args):
            yield node, mod


def _check_quantized(converted: GraphModule, backend: str) -> None:
    for node, mod in _float_nodes(converted):
        if isinstance(mod, _WEIGHTED):
            raise CompressError(f"layer {node.target} ({type(mod).__name__}) has no int8 kernel in the {backend} "
                                "backend")


def _describe(converted: GraphModule, plan: list[dict[str, Any]], backend: str) -> dict[str, Any]:
    quantized = [{"layer": node.target, "kind": type(mod).__name__} for node in converted.graph.nodes
                 if (mod := _module(converted, node)) is not None and _is_quantized(mod)]
    stayed_float = [{"layer": node.target, "kind": type(mod).__name__,
                     "why": f"no int8 {type(mod).__name__} in the {backend} backend; runs in float between "
                            "dequantize and quantize"} for node, mod in _float_nodes(converted)]
    split = [{"layer": s["bn"], "scale_into": s["scale_into"], "shift_into": s["shift_into"], "through": s["via"]}
             for s in plan if "scale_into" in s]
    moved = [{"layer": s["bn"], "after": s["after"]} for s in plan if "after" in s]
    return {"quantized": quantized, "float": stayed_float, "batchnorm_split": split,
            "batchnorm_moved_after_pool": moved}


def _encode_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A quantized ``state_dict`` as plain tensors plus a JSON layout: a quantized tensor becomes its
    integer values (``key``), scales (``key::scale``) and zero points (``key::zero_point``); packed
    linear parameters, ``(weight, bias)`` tuples, become ``key::0`` and ``key::1``; dtypes go to the layout."""
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, Any] = {}

    def put(key: str, value: Any) -> Any:
        if isinstance(value, torch.dtype):
            return {"dtype": str(value).removeprefix("torch.")}
        if value is None:
            return {"none": True}
        if isinstance(value, tuple):
            return {"tuple": [put(f"{key}::{i}", v) for i, v in enumerate(value)]}
        value = value.detach()
        if not value.is_quantized:
            tensors[key] = value.clone()
            return {"tensor": True}
        scheme = value.qscheme()
        tensors[key] = value.int_repr()
        if scheme == torch.per_tensor_affine:
            tensors[f"{key}::scale"] = torch.tensor([value.q_scale()], dtype=torch.float64)
            tensors[f"{key}::zero_point"] = torch.tensor([value.q_zero_point()], dtype=torch.int64)
            return {"qtensor": str(value.dtype).removeprefix("torch."), "axis": None}
        if scheme == torch.per_channel_affine:
            tensors[f"{key}::scale"] = value.q_per_channel_scales().clone()
            tensors[f"{key}::zero_point"] = value.q_per_channel_zero_points().clone()
            return {"qtensor": str(value.dtype).removeprefix("torch."), "axis": value.q_per_channel_axis()}
        raise CompressError(f"{key}: quantization scheme {scheme} is not stored by cnnlab")

    for key, value in state.items():
        layout[key] = put(key, value)
    return tensors, layout


def _decode_state(tensors: dict[str, torch.Tensor], layout: dict[str, Any]) -> OrderedDict[str, Any]:
    """The inverse of :func:`_encode_state`."""

    def get(key: str, spec: dict[str, Any]) -> Any:
        if "dtype" in spec:
            return getattr(torch, spec["dtype"])
        if "none" in spec:
            return None
        if "tuple" in spec:
            return tuple(get(f"{key}::{i}", s) for i, s in enumerate(spec["tuple"]))
        if "tensor" in spec:
            return tensors[key]
        dtype, values = getattr(torch, spec["qtensor"]), tensors[key]
        scale, zero_point = tensors[f"{key}::scale"], tensors[f"{key}::zero_point"]
        if spec["axis"] is None:
            q = torch._make_per_tensor_quantized_tensor(values, float(scale), int(zero_point))
        else:
            q = torch._make_per_channel_quantized_tensor(values, scale, zero_point, spec["axis"])
        if q.dtype != dtype:
            raise CompressError(f"{key}: stored as {q.dtype}, the layout says {dtype}")
        return q

    return OrderedDict((key, get(key, spec)) for key, spec in layout.items())
