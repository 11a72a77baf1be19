"""Maximal filter response (activation maximisation; Erhan et al. 2009, Olah et al., "Feature
Visualization", Distill 2017): optimise an input, from noise, to maximise the mean activation of one
channel of a layer (or one class logit), regularised by random jitter, periodic Gaussian blur and
weight decay on the pixels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torchvision.transforms.functional as TF

from cnnlab.viz._state import VizError, device_of, untouched
from cnnlab.viz.layers import layer as find_layer

__all__ = ["Maximized", "maximize_activation"]


@dataclass
class Maximized:
    """``images`` (K, C, H, W) in the model's input space, one per channel; the target activation
    (mean of the channel, or the logit) at the starting noise and at the end, and their ratio."""

    images: torch.Tensor
    channels: list[int]
    layer: str | None
    start: torch.Tensor
    final: torch.Tensor

    @property
    def gain(self) -> torch.Tensor:
        """final / start where the start is positive, else ``inf`` when the activation became positive."""
        pos = self.start > 0
        return torch.where(pos, self.final / self.start.where(pos, torch.ones_like(self.start)),
                           torch.where(self.final > 0, torch.full_like(self.final, float("inf")),
                                       torch.zeros_like(self.final)))


def maximize_activation(model: nn.Module, layer: str | None, channels: Sequence[int] | int, input_size,
                        *, steps: int = 128, lr: float = 0.1, jitter: int = 2, blur_every: int = 4,
                        blur_sigma: float = 0.5, decay: float = 1e-4, noise: float = 0.1,
                        seed: int = 0) -> Maximized:
    """Optimise one input per channel (all in one batch) with Adam for ``steps`` steps.

    Args:
        layer: a module name whose output's channel ``c`` mean is maximised; ``None``: the class logits
            (``channels`` are then classes).
        input_size: (C, H, W) of the model's input.
        jitter: random roll of up to this many pixels each step (robustness to translation).
        blur_every, blur_sigma: a 3x3 Gaussian blur of the image every ``blur_every`` steps (0: never).
        decay: each step multiplies the image by ``1 - decay`` (an L2 prior toward the mean image).
    """
    channels = [channels] if isinstance(channels, int) else list(channels)
    if steps < 1:
        raise VizError(f"steps must be a positive integer; got {steps}")
    module = find_layer(model, layer) if layer is not None else None
    device = device_of(model)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x0 = (torch.randn((len(channels), *input_size), generator=gen) * noise).to(device)
    store = {}

    def objective(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        act = store["a"] if module is not None else out
        count = act.shape[1]
        bad = [c for c in channels if not 0 <= c < count]
        if bad:
            what = f"layer {layer!r} has {count} channels" if module is not None else f"the model has {count} classes"
            raise VizError(f"channel {bad[0]} is out of range; {what} (0-{count - 1})")
        idx = torch.arange(len(channels), device=act.device)
        picked = act[idx, torch.as_tensor(channels, device=act.device)]
        return picked.flatten(1).mean(1) if picked.dim() > 1 else picked

    with untouched(model):
        handle = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o)) if module is not None \
            else None
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            with torch.no_grad():
                start = objective(x0).detach().cpu()
            x = x0.clone().requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr)
            for step in range(steps):
                dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist() if jitter else (0, 0))
                loss = -objective(torch.roll(x, shifts=(dy, dx), dims=(-2, -1))).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.mul_(1 - decay)
                    if blur_every and (step + 1) % blur_every == 0:
                        x.copy_(TF.gaussian_blur(x, kernel_size=3, sigma=blur_sigma))
            with torch.no_grad():
                final = objective(x).detach().cpu()
        finally:
            if handle is not None:
                handle.remove()
    return Maximized(x.detach(), channels, layer, start, final)
