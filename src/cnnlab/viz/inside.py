"""What a conv layer holds and what it computes: its learned filters and its feature maps for one image."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from cnnlab.viz._state import VizError, device_of, untouched
from cnnlab.viz.layers import conv_layer, conv_layers
from cnnlab.viz.layers import layer as find_layer

__all__ = ["filters", "feature_maps"]


def filters(model: nn.Module, layer: str | None = None, mode: str = "auto") -> tuple[str, torch.Tensor]:
    """The kernels of a conv layer (default: the first) as images; returns (layer name, images).

    ``mode``: ``pictures`` gives (O, C, kH, kW) with C in {1, 3} (a first layer's filters are images of
    what they respond to); ``channels`` gives (O * C, 1, kH, kW), every input channel's slice;
    ``norm`` gives (O, 1, kH, kW), the L2 norm over input channels (where a deep filter looks).
    ``auto``: pictures for 1 or 3 input channels (per group), else norm.
    """
    name, conv = conv_layer(model, layer, default="first")
    w = conv.weight.detach().float().cpu()
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
