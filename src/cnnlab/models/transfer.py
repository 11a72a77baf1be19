"""Transfer learning: a trained model's layers under a new head (the lecture's "using fixed CNN layers
for a different CV task").

:func:`transfer` does three things to a model made by :func:`~cnnlab.models.create_model` (in place),
and records them in its spec (``model.cnnlab_spec["transfer"]``, one record per transfer, so a
transferred model can be transferred again), which is how :func:`~cnnlab.models.build_from_spec`
rebuilds it exactly:

1. **Input channels** (:func:`adapt_input_channels`): when the new images have another number of
   channels than the source's first convolution takes, that convolution's kernels are adapted as
   timm's ``adapt_input_conv`` does: to 1 channel, summed over the input channels (a grey image is an
   RGB image with three equal channels, so the sum gives the response the RGB kernels had to it); from
   1 channel to N, repeated and divided by N (the same response to N equal channels). Other pairs
   (3 -> 4) are refused.
2. **A new head** (:func:`replace_head`), one of :data:`TRANSFER_HEADS`:

   - ``gap`` (the default for cnnlab's models): the ``classifier`` is replaced by global average
     pooling of the ``features`` trunk's map + one linear layer. The dense head of ``fmnist-cnn``
     (built for 28x28) goes, so the trunk works at any image size.
   - ``last`` (the default, and the only choice, for torchvision models): the last ``Linear`` (or
     ``Conv2d``: SqueezeNet) of the head is replaced and the model's own pooling and pre-logit layers
     stay, as torchvision's fine-tuning tutorial and timm's ``reset_classifier`` do. The replaced
     layer sits after global average pooling in every torchvision family except VGG and AlexNet
     (dense layers on a fixed 7x7 / 6x6 pool), ViT (class token) and SqueezeNet (a conv, then the
     pool). For cnnlab models it keeps e.g. ``fmnist-cnn``'s dense 512 layer as a feature layer.

   ``num_classes=0`` gives no linear layer at all: the model then outputs the features the head would
   see (timm's convention), which is what ``--extract-features`` writes.
3. **Freezing** (:func:`freeze`): ``"features"`` freezes everything but the new head, ``"none"``
   nothing, an integer N the first N of :func:`transfer_blocks` (the children of the ``features``
   trunk that hold parameters; for a torchvision model without ``features``, such as ResNet, the
   model's own children: ``conv1, bn1, layer1, ..., layer4``). Frozen parameters get
   ``requires_grad=False``; frozen BatchNorm layers become :class:`EvalBatchNorm2d` (1d, 3d): the same
   module, parameters, buffers and state-dict keys, but its ``train()`` keeps it in eval mode, so its
   running statistics never move and a training batch is normalised with them. The model carries the
   rule itself, so no training loop (cnnlab's engine, a fine-tuning loop, ``evaluate``'s mode restore)
   has to remember it; PyTorch's own ``parametrize`` swaps a module's class the same way.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from cnnlab.errors import CnnlabError
from cnnlab.models.info import ZOO_PREFIX
from cnnlab.models.registry import model_spec
from cnnlab.models.zoo import head_name

__all__ = [
    "TRANSFER_HEADS", "TransferError", "EvalBatchNorm1d", "EvalBatchNorm2d", "EvalBatchNorm3d", "transfer",
    "apply_transfer_spec", "adapt_input_channels", "replace_head", "freeze", "transfer_blocks", "default_head",
    "head_module",
]

TRANSFER_HEADS = ("gap", "last")
FREEZE_MODES = ("features", "none")


class TransferError(CnnlabError):
    """A source model that cannot be transferred as asked; the message says why and what would work."""


class _EvalMode:
    """Mixin: a module that stays in eval mode whatever ``train()`` asks."""

    def train(self, mode: bool = True):
        return super().train(False)


class EvalBatchNorm1d(_EvalMode, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` frozen in eval mode: normalises with its running statistics, never updates them."""


class EvalBatchNorm2d(_EvalMode, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` frozen in eval mode: normalises with its running statistics, never updates them."""


class EvalBatchNorm3d(_EvalMode, nn.BatchNorm3d):
    """``nn.BatchNorm3d`` frozen in eval mode: normalises with its running statistics, never updates them."""


_EVAL_BN = {nn.BatchNorm1d: EvalBatchNorm1d, nn.BatchNorm2d: EvalBatchNorm2d, nn.BatchNorm3d: EvalBatchNorm3d}
_PLAIN_BN = {v: k for k, v in _EVAL_BN.items()}


def _name(model: nn.Module) -> str:
    return model_spec(model)["name"]


def _is_torchvision(model: nn.Module) -> bool:
    return _name(model).startswith(ZOO_PREFIX)


def _within(name: str, prefix: str) -> bool:
    """Whether qualified name ``name`` is module ``prefix`` or inside it (``""``: the whole model)."""
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def default_head(model: nn.Module) -> str:
    """``last`` for torchvision models (they keep their own pooling), ``gap`` for cnnlab's."""
    return "last" if _is_torchvision(model) else "gap"


def head_module(model: nn.Module) -> str | None:
    """The qualified name of the head the last :func:`transfer` put on ``model`` (None: not transferred)."""
    records = getattr(model, "cnnlab_spec", {}).get("transfer")
    return records[-1]["head_module"] if records else None


def _zeros(model: nn.Module, input_size: Sequence[int]) -> torch.Tensor:
    p = next(model.parameters())
    return torch.zeros(1, *input_size, dtype=p.dtype, device=p.device)


@contextmanager
def _eval(module: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside; every module's mode restored after."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes.items():
            m.training = training


def _probe(model: nn.Module, module: nn.Module, input_size: Sequence[int], what: str) -> torch.Tensor:
    """``module``'s output for a zero batch of one ``input_size`` image (eval mode, no gradients)."""
    try:
        with _eval(module):
            return module(_zeros(model, input_size))
    except RuntimeError as e:
        size, first = "x".join(map(str, input_size)), str(e).strip().splitlines()[0]
        raise TransferError(f"{_name(model)}{what} cannot take {size} images: {first}") from None


class _Reached(Exception):
    """Raised by a hook to stop a forward pass once the layer of interest is reached."""


def adapt_input_channels(model: nn.Module, in_channels: int, input_size: Sequence[int]) -> str | None:
    """Make the first ``Conv2d`` of ``model`` take ``in_channels`` channels (see the module docstring);
    return its name, or None when it takes them already (or has no convolution: a model without one, the
    MLP, takes what it was built for or fails on the image). ``input_size`` (C, H, W): one image of it is
    run to check that this convolution is the one that sees the image."""
    name, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), ("", None))
    if conv is None or conv.in_channels == in_channels:
        return None
    old = conv.in_channels
    if type(conv) is not nn.Conv2d or conv.groups != 1:
        raise TransferError(f"{_name(model)}'s first convolution {name} ({type(conv).__name__}, groups "
                            f"{conv.groups}) cannot be adapted from {old} to {in_channels} input channels")
    if in_channels != 1 and old != 1:
        raise TransferError(f"{_name(model)} takes {old}-channel images and these have {in_channels}: only 1 <-> N "
                            f"channels are adapted (summed or repeated kernels); convert the images to 1 or {old} "
                            f"channels")
    x, seen = _zeros(model, (old, *input_size[1:])), []

    def reached(module: nn.Module, args: tuple) -> None:
        seen.append(args[0] is x)
        raise _Reached

    handle = conv.register_forward_pre_hook(reached)
    try:
        with _eval(model):
            model(x)
    except (_Reached, RuntimeError):  # a RuntimeError: something before the conv failed on the image
        pass
    finally:
        handle.remove()
    if seen != [True]:
        raise TransferError(f"{_name(model)}'s first convolution {name} is not the layer that sees the image; "
                            f"its input channels ({old}) cannot be adapted to {in_channels}")
    with torch.no_grad():
        w = conv.weight
        w = w.sum(1, keepdim=True) if in_channels == 1 else w.repeat(1, in_channels, 1, 1) / in_channels
    conv.weight = nn.Parameter(w.contiguous(), requires_grad=conv.weight.requires_grad)
    conv.in_channels = in_channels
    return name


def replace_head(model: nn.Module, num_classes: int, input_size: Sequence[int], head: str | None = None) -> str:
    """Replace ``model``'s classifier by a new one for ``num_classes`` (``0``: none, the model outputs the
    head's input features); return the qualified name of the new module. ``head``: one of :data:`TRANSFER_HEADS`
    (default :func:`default_head`); ``input_size`` (C, H, W): the images the model will see (``gap`` runs
    one through the trunk to size the linear layer)."""
    head = head or default_head(model)
    if head not in TRANSFER_HEADS:
        raise TransferError(f"head {head!r} is not valid; choose one of: {', '.join(TRANSFER_HEADS)}")
    if not isinstance(num_classes, int) or num_classes < 0:
        raise TransferError(f"num_classes must be an integer >= 0, got {num_classes!r}")
    name = _name(model)
    p = next(model.parameters())
    if _is_torchvision(model):
        container = head_name(name[len(ZOO_PREFIX):])
        if head == "gap":
            raise TransferError(f"{name} keeps its own pooling; head 'last' replaces the last layer of its "
                                f".{container} ('gap' is for cnnlab's features/classifier models)")
    else:
        container = "classifier"
        if not isinstance(getattr(model, "features", None), nn.Module) or not hasattr(model, "classifier"):
            raise TransferError(f"{name} has no features/classifier structure to put a new head on")
    if head == "gap":
        fmap = _probe(model, model.features, input_size, "'s features")
        if fmap.ndim != 4:
            raise TransferError(f"{name}'s features give {tuple(fmap.shape[1:])} per image, not a feature map to "
                                f"pool; use head 'last'")
        fc = nn.Linear(fmap.shape[1], num_classes) if num_classes else nn.Identity()
        new = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=fc))
        model.set_submodule(container, new.to(p.device, p.dtype))
        return container
    last = [(n, m) for n, m in model.get_submodule(container).named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not last:
        raise TransferError(f"{name}'s .{container} has no Linear or Conv2d layer to replace")
    sub, old = last[-1]
    path = f"{container}.{sub}" if sub else container
    if not num_classes:
        new = nn.Identity()
    elif isinstance(old, nn.Linear):
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    else:
        new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding, old.dilation,
                        bias=old.bias is not None)
    model.set_submodule(path, new.to(p.device, p.dtype))
    return path


def transfer_blocks(model: nn.Module, head: str) -> list[tuple[str, nn.Module]]:
    """The blocks ``freeze(model, N)`` counts, in order: the children of the ``features`` trunk that hold
    parameters (every cnnlab model, and torchvision's VGG, DenseNet, MobileNet, EfficientNet, ConvNeXt,
    Swin, ...), else the model's own children that do (ResNet: conv1, bn1, layer1-4), ``head`` excluded."""
    trunk = getattr(model, "features", None)
    prefix = "features." if isinstance(trunk, nn.Module) else ""
    trunk = trunk if prefix else model
    return [(prefix + n, m) for n, m in trunk.named_children()
            if not _within(head, prefix + n) and any(True for _ in m.parameters())]


def _set_eval_bn(module: nn.Module, frozen: bool) -> None:
    kind = type(module)
    if frozen and kind in _EVAL_BN:
        module.__class__ = _EVAL_BN[kind]
        module.eval()
    elif not frozen and kind in _PLAIN_BN:
        module.__class__ = _PLAIN_BN[kind]
    elif frozen and kind not in _PLAIN_BN:
        raise TransferError(f"cannot freeze the statistics of {kind.__name__} (BatchNorm1d/2d/3d only)")


def freeze(model: nn.Module, how: str | int, head: str) -> None:
    """Freeze part of ``model`` (whose new head is module ``head``): ``"features"`` everything but the
    head, ``"none"`` nothing, an integer N the first N :func:`transfer_blocks`. Everything is unfrozen
    first, so a transferred model can be frozen differently. Frozen BatchNorm layers stay in eval mode."""
    if how in FREEZE_MODES:
        scopes = [""] if how == "features" else []
    elif isinstance(how, int) and not isinstance(how, bool) and how >= 0:
        blocks = transfer_blocks(model, head)
        if how > len(blocks):
            raise TransferError(f"cannot freeze {how} blocks: {_name(model)} has {len(blocks)} "
                                f"({', '.join(n for n, _ in blocks)}); --freeze takes 0-{len(blocks)}, features "
                                f"or none")
        scopes = [n for n, _ in blocks[:how]]
    else:
        raise TransferError(f"freeze {how!r} is not valid; choose features, none, or a number of blocks")

    def frozen(name: str) -> bool:
        return not _within(name, head) and any(_within(name, s) for s in scopes)

    for name, p in model.named_parameters():
        p.requires_grad_(not frozen(name))
    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm):
            _set_eval_bn(m, frozen(name))


_freeze = freeze  # for transfer(), whose argument of that name shadows it


def transfer(model: nn.Module, num_classes: int, input_size: Sequence[int], *, head: str | None = None,
             freeze: str | int = "features", source: str | None = None, weights: str | None = None) -> nn.Module:
    """Adapt ``model`` (made by ``create_model``, weights loaded) in place to ``input_size`` (C, H, W)
    images of ``num_classes`` classes: input channels adapted, a new ``head`` (:func:`replace_head`),
    ``freeze`` applied (:func:`freeze`); return it. The record appended to ``model.cnnlab_spec["transfer"]``
    (``source`` and ``weights`` are kept there for the record) lets ``build_from_spec`` rebuild it."""
    spec = model_spec(model)
    if "compression" in spec:
        raise TransferError(f"{spec['name']} is a compressed model ({spec['compression'].get('method')}); "
                            f"transfer from the float run it came from")
    input_size = [int(v) for v in input_size]
    if len(input_size) != 3 or min(input_size) < 1:
        raise TransferError(f"input_size must be (C, H, W) positive integers, got {input_size!r}")
    head = head or default_head(model)
    adapt_input_channels(model, input_size[0], input_size)
    path = replace_head(model, num_classes, input_size, head)
    out = _probe(model, model, input_size, " with its new head")
    if num_classes and tuple(out.shape) != (1, num_classes):
        raise TransferError(f"{spec['name']} with its new head outputs {tuple(out.shape[1:])}, not {num_classes} "
                            f"class scores")
    _freeze(model, freeze, path)
    record: dict[str, Any] = {"source": source, "weights": weights, "num_classes": num_classes,
                              "input_size": input_size, "head": head, "freeze": freeze, "head_module": path}
    model.cnnlab_spec = {**spec, "transfer": [*spec.get("transfer", []), record]}
    return model


def apply_transfer_spec(model: nn.Module, records: Sequence[dict[str, Any]]) -> nn.Module:
    """Redo the transfers recorded in a spec on a freshly built source ``model`` (weights come after)."""
    for r in records:
        transfer(model, r["num_classes"], r["input_size"], head=r["head"], freeze=r["freeze"], source=r.get("source"),
                 weights=r.get("weights"))
    return model
