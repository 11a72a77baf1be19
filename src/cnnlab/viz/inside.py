"""What a conv layer holds and what it computes: its learned filters and its feature maps for one image."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from cnnlab.viz._state import VizError, device_of, untouched
from cnnlab.viz.layers import conv_layer, conv_layers
from cnnlab.viz.layers import layer as find_layer

__all__ = ["effective_receptive_field", "layer_outputs", "filters", "feature_maps", "has_filters"]


def filters(model: nn.Module, layer: str | None = None, mode: str = "auto") -> tuple[str, torch.Tensor]:
    """The kernels of a conv layer (default: the first) as images; returns (layer name, images).

    ``mode``: ``pictures`` gives (O, C, kH, kW) with C in {1, 3} (a first layer's filters are images of
    what they respond to); ``channels`` gives (O * C, 1, kH, kW), every input channel's slice;
    ``norm`` gives (O, 1, kH, kW), the L2 norm over input channels (where a deep filter looks).
    ``auto``: pictures for 1 or 3 input channels (per group), else norm. An int8 model's (``torch.ao``
    quantized) convs are read too: their integer kernels dequantized, the values the model computes with.
    """
    name, w = _kernels(model, layer)
    c = w.shape[1]
    if mode == "auto":
        mode = "pictures" if c in (1, 3) else "norm"
    if mode == "pictures":
        if c not in (1, 3):
            raise VizError(f"layer {name!r} has {c} input channels per filter; pictures need 1 or 3 "
                           f"(use mode 'channels' or 'norm')")
        return name, w
    if mode == "channels":
        return name, w.reshape(-1, 1, *w.shape[2:])
    if mode == "norm":
        return name, w.pow(2).sum(1, keepdim=True).sqrt()
    raise VizError(f"mode must be one of auto, pictures, channels, norm; got {mode!r}")


def _quantized_convs(model: nn.Module) -> dict[str, nn.Module]:
    from torch.ao.nn.quantized import Conv2d as QuantizedConv2d

    return {name: m for name, m in model.named_modules() if isinstance(m, QuantizedConv2d)}


def _kernels(model: nn.Module, layer: str | None) -> tuple[str, torch.Tensor]:
    """The (O, C, kH, kW) float kernels of conv ``layer`` (default: the first), a quantized one's dequantized."""
    quantized = _quantized_convs(model) if not conv_layers(model) else {}
    if not quantized:
        name, conv = conv_layer(model, layer, default="first")
        return name, conv.weight.detach().float().cpu()
    name = next(iter(quantized)) if layer is None else layer
    if name not in quantized:
        raise VizError(f"{name!r} is not a conv layer; conv layers: {', '.join(quantized)}")
    return name, quantized[name].weight().dequantize().float().cpu()


def has_filters(model: nn.Module) -> bool:
    """Whether :func:`filters` has a conv layer of ``model`` to read: a float one or an int8 one."""
    return bool(conv_layers(model) or _quantized_convs(model))


def feature_maps(model: nn.Module, image: torch.Tensor, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The outputs (C, H, W) of ``layers`` (default: every conv layer) for one image (C, H, W) or (1, C, H, W),
    in eval mode; the model is left as it was. Each output is copied when its layer returns: an
    in-place activation after the layer would otherwise rewrite it."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    if image.dim() != 4 or image.shape[0] != 1:
        raise VizError(f"feature_maps takes one image (C, H, W); got shape {tuple(image.shape)}")
    names = list(layers) if layers else list(conv_layers(model))
    modules = {n: find_layer(model, n) for n in names}
    out: dict[str, torch.Tensor] = {}
    with untouched(model), torch.no_grad():
        handles = [m.register_forward_hook(lambda mod, i, o, n=n: out.__setitem__(n, o.detach()[0].cpu().clone()))
                   for n, m in modules.items()]
        try:
            model(image.to(device_of(model)))
        finally:
            for h in handles:
                h.remove()
    return {n: out[n] for n in names if n in out}


def layer_outputs(model: nn.Module, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output of every leaf module (a module without submodules: conv, ReLU, BatchNorm, pool, linear,
    ...) for one image (C, H, W), in the order they ran, each copied when it returns (without the batch
    dimension, as float: an int8 layer's output dequantized); eval mode, no gradients, the model left as it
    was. A module called twice keeps its last output; a tuple output, its first tensor."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    out: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(mod, inputs, output):
            t = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(t, torch.Tensor):
                out.pop(name, None)
                t = t.detach()[0]
                out[name] = (t.dequantize() if t.is_quantized else t.float()).cpu().clone()  # int8 runs' layers
        return hook

    leaves = [(n, m) for n, m in model.named_modules() if n and not any(True for _ in m.children())]
    with untouched(model), torch.no_grad():
        handles = [m.register_forward_hook(keep(n)) for n, m in leaves]
        try:
            model(image.to(device_of(model)))
        finally:
            for h in handles:
                h.remove()
    return out


def effective_receptive_field(model: nn.Module, image: torch.Tensor, layer: str, *, channel: int,
                              position: Sequence[int]) -> torch.Tensor:
    """|d unit / d input| summed over the input's channels: (H, W), how much each input pixel moves the
    unit at ``position`` of ``channel`` in ``layer``'s output for this image (Luo et al., 2016, "Understanding
    the effective receptive field"). Eval mode; the model is left as it was."""
    if image.dim() == 3:
        image = image.unsqueeze(0)
    module = find_layer(model, layer)
    seen: list[torch.Tensor] = []
    with untouched(model):
        x = image.to(device_of(model)).float().clone().requires_grad_(True)
        def hook(mod, inputs, output):
            if isinstance(output, torch.Tensor):  # the next layer gets a copy: an in-place ReLU would rewrite it
                seen.append(output)
                return output.clone()
            seen.append(output[0])
            return None

        handle = module.register_forward_hook(hook)
        try:
            model(x)
        finally:
            handle.remove()
        if not seen:
            raise VizError(f"layer {layer!r} did not run for this input")
        out = seen[-1][0]
        index = (channel, *position)
        if len(index) != out.dim() or any(not 0 <= v < n for v, n in zip(index, out.shape)):
            raise VizError(f"unit (channel {channel}, position {list(position)}) is outside layer {layer!r}'s "
                           f"output of shape {list(out.shape)} (channel, then {out.dim() - 1} position indices)")
        unit = out[index]
        (grad,) = torch.autograd.grad(unit, x)
    return grad[0].abs().sum(0).cpu()
