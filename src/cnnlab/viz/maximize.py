"""Maximal filter response (activation maximisation; Erhan et al. 2009, Olah et al., "Feature
Visualization", Distill 2017): optimise an input, from noise, to maximise the mean activation of one
channel of a layer (or one class logit), regularised by random jitter, periodic Gaussian blur, weight
decay on the pixels and, optionally, the valid input range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torchvision.transforms.functional as TF

from cnnlab.viz._state import VizError, device_of, untouched
from cnnlab.viz.layers import layer as find_layer

__all__ = ["Maximized", "maximize_activation"]


@dataclass
class Maximized:
    """The result of :func:`maximize_activation`: ``images`` (K, C, H, W) in the model's input space, one
    per channel, and per channel (K,) tensors: the target activation (the channel's mean over positions,
    or the logit) at the starting noise (``start``), at the end (``final``) and at the mean image
    (``base``: an all-zero input, the dataset mean in normalised units), and ``noise_response``: how far
    the starting noise moves the target's units from ``base`` (mean over positions of the absolute
    change)."""

    images: torch.Tensor
    channels: list[int]
    layer: str | None
    start: torch.Tensor
    final: torch.Tensor
    base: torch.Tensor
    noise_response: torch.Tensor

    @property
    def gain(self) -> torch.Tensor:
        """How many times more the final image raises the target than the starting noise moves it:
        ``(final - base) / noise_response``. Measured from the mean image, so that a bias (a constant no
        input creates) counts for neither; the noise's change is taken in absolute value per position, so
        that a linear unit's ups and downs on zero-mean noise do not cancel to a near-zero denominator.
        Where the noise does not move the units at all: ``inf`` if the target rose, else 0."""
        rise = self.final - self.base
        moved = self.noise_response > 0
        return torch.where(moved, rise / self.noise_response.where(moved, torch.ones_like(rise)),
                           torch.where(rise > 0, torch.full_like(rise, float("inf")), torch.zeros_like(rise)))


class _RedirectedReLU(torch.autograd.Function):
    """ReLU whose backward pass lets gradient through units that are off where it would push them up
    toward firing -- Lucid's redirected ReLU gradient (Olah et al. 2017) -- but only where nothing gets
    through: for a channel that is off at every position of an example (feature maps), or a vector that is
    off everywhere (Lucid's own rule, per example). Elsewhere the true ReLU gradient."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        off = x <= 0
        relu_grad = grad.masked_fill(off, 0)
        # grad is d(loss)/d(output), loss = -objective: grad > 0 would push an off unit further down
        redirected = grad.masked_fill(off & (grad > 0), 0)
        silent = off.flatten(2).all(2) if x.dim() > 2 else off.flatten(1).all(1, keepdim=True)
        silent = silent.view(*silent.shape, *([1] * (x.dim() - silent.dim())))
        return torch.where(silent, redirected, relu_grad)


def _redirect_relus(model: nn.Module) -> list:
    """Hooks making each ``nn.ReLU`` module of ``model`` a :class:`_RedirectedReLU` (``F.relu`` calls are not
    reached). The input is cloned before the module runs, so in-place ReLUs work; the hooks run before
    any other forward hook, so a hook on the ReLU itself sees the redirected output."""
    handles, saved = [], {}
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            handles.append(m.register_forward_pre_hook(lambda mod, i: saved.__setitem__(mod, i[0].clone())))
            handles.append(m.register_forward_hook(lambda mod, i, o: _RedirectedReLU.apply(saved.pop(mod)),
                                                   prepend=True))
    return handles


def maximize_activation(model: nn.Module, layer: str | None, channels: Sequence[int] | int, input_size,
                        *, steps: int = 128, lr: float = 0.1, jitter: int = 2, blur_every: int = 4,
                        blur_sigma: float = 0.5, decay: float = 1e-4, noise: float = 0.1,
                        input_range: tuple[float, float] | None = None, redirect_steps: int = 16,
                        polish: float = 0.25, seed: int = 0,
                        progress: Callable[[float], None] | None = None) -> Maximized:
    """Optimise one input per channel (all in one batch) with Adam for ``steps`` steps, starting from
    Gaussian noise of standard deviation ``noise`` around the mean image (zero, in normalised units).

    Args:
        layer: a module name whose output's channel ``c`` mean is maximised; ``None``: the class logits
            (``channels`` are then classes).
        input_size: (C, H, W) of the model's input.
        jitter: random roll of up to this many pixels each step (robustness to translation).
        blur_every, blur_sigma: a 3x3 Gaussian blur of the image every ``blur_every`` steps (0: never).
        decay: each step multiplies the image by ``1 - decay`` (an L2 prior toward the mean image).
        input_range: (low, high) the pixels are clamped to after each step, e.g. for images normalised
            from [0, 1]: ``((0 - mean) / std, (1 - mean) / std)``. ``None``: unbounded.
        polish: the last fraction of the steps runs without jitter and blur (decay and the input range
            still apply): the regularisers shape the image early on, then the polish lets the target reach
            the maximum near that image. On 28x28 Fashion-MNIST, a 2-pixel roll is a large move and a
            constant jitter and blur keep the target well below what the image can give (see
            ``bench/RESULTS.md``, "maximal filter response"). 0: regularise to the end.
        progress: called with the fraction done (0 to 1) after every step (the web explorer's progress bar).
        redirect_steps: a second chance for the targets the optimisation did not raise (from their value
            at the mean image) by more than the noise moves them. From near-blank noise the units a target
            needs may all be off: their true gradient is zero and the target never rises. Such targets are
            optimised again from the same noise with redirected ReLU gradients (:class:`_RedirectedReLU`)
            for the first ``redirect_steps`` steps, and the better image is kept; 0: no second chance.
            (Not the first try for every target: on fmnist-cnn, redirecting from the start left some logits
            far below where the true gradient takes them.)

    Returns a :class:`Maximized`; its ``gain`` says how many times more the result raises the target
    (from its value at the mean image) than the starting noise moves it.
    """
    channels = [channels] if isinstance(channels, int) else list(channels)
    if steps < 1:
        raise VizError(f"steps must be a positive integer; got {steps}")
    if not 0 <= polish <= 1:
        raise VizError(f"polish must be a fraction in [0, 1]; got {polish}")
    regularised = steps - round(polish * steps)
    if input_range is not None and not input_range[0] < input_range[1]:
        raise VizError(f"input_range must be (low, high) with low < high; got {tuple(input_range)}")
    module = find_layer(model, layer) if layer is not None else None
    device = device_of(model)
    x0 = (torch.randn((len(channels), *input_size), generator=torch.Generator().manual_seed(seed)) * noise)
    x0 = x0.to(device)
    if input_range is not None:
        x0 = x0.clamp(*input_range)
    store = {}

    def target(x: torch.Tensor, chans: list[int]) -> torch.Tensor:
        """(K, ...) channel ``chans[k]``'s map (or logit) for input ``k``."""
        out = model(x)
        act = store["a"] if module is not None else out
        count = act.shape[1]
        bad = [c for c in chans if not 0 <= c < count]
        if bad:
            what = f"layer {layer!r} has {count} channels" if module is not None else f"the model has {count} classes"
            raise VizError(f"channel {bad[0]} is out of range; {what} (0-{count - 1})")
        idx = torch.arange(len(chans), device=act.device)
        return act[idx, torch.as_tensor(chans, device=act.device)]

    def mean(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).mean(1) if t.dim() > 1 else t

    def optimise(x_start: torch.Tensor, chans: list[int], redirect: int, done: tuple[float, float]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)  # the same jitter for a second chance
        x = x_start.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        hooks = _redirect_relus(model) if redirect else []
        try:
            for step in range(steps):
                if step == redirect:
                    for h in hooks:
                        h.remove()
                    hooks = []
                dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist()
                          if jitter and step < regularised else (0, 0))
                loss = -mean(target(torch.roll(x, shifts=(dy, dx), dims=(-2, -1)), chans)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.mul_(1 - decay)
                    if blur_every and (step + 1) % blur_every == 0 and step < regularised:
                        x.copy_(TF.gaussian_blur(x, kernel_size=3, sigma=blur_sigma))
                    if input_range is not None:
                        x.clamp_(*input_range)
                if progress is not None:
                    progress(done[0] + (done[1] - done[0]) * (step + 1) / steps)
        finally:
            for h in hooks:
                h.remove()
        return x.detach()

    with untouched(model):
        # a clone: an in-place op after the layer (conv -> ReLU(inplace=True)) would otherwise rewrite the output
        handle = module.register_forward_hook(
            lambda m, i, o: store.__setitem__("a", o.clone() if torch.is_tensor(o) else o)) if module is not None \
            else None
        try:
            for p in model.parameters():
                p.requires_grad_(False)
            with torch.no_grad():
                at_noise, at_mean = target(x0, channels), target(torch.zeros_like(x0), channels)
                start, base = mean(at_noise).cpu(), mean(at_mean).cpu()
                noise_response = mean((at_noise - at_mean).abs()).cpu()
            x = optimise(x0, channels, 0, (0.0, 0.8 if redirect_steps > 0 else 1.0))
            with torch.no_grad():
                final = mean(target(x, channels)).cpu()
            beaten = final - base > noise_response  # raised more than the noise moves it
            again = [k for k in range(len(channels)) if not beaten[k]] if redirect_steps > 0 else []
            if again:
                x2 = optimise(x0[again], [channels[k] for k in again], redirect_steps, (0.8, 1.0))
                with torch.no_grad():
                    final2 = mean(target(x2, [channels[k] for k in again])).cpu()
                for j, k in enumerate(again):
                    if final2[j] > final[k]:
                        x[k], final[k] = x2[j], final2[j]
        finally:
            if handle is not None:
                handle.remove()
    if progress is not None:
        progress(1.0)
    return Maximized(x, channels, layer, start, final, base, noise_response)
