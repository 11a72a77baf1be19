"""Leaving a model as it was found: mode, gradients, requires_grad flags, hooks."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from cnnlab.errors import CnnlabError

__all__ = ["untouched", "VizError"]


class VizError(CnnlabError):
    """Bad input to a visualisation: names the value and what would be valid."""


@contextmanager
def untouched(model: nn.Module, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Run the body on ``model`` (in eval mode by default, so BatchNorm statistics and dropout are not
    touched) and restore afterwards: every module's training flag, every parameter's ``requires_grad``
    and ``.grad``, and the hook dictionaries (any hook added inside is removed)."""
    modes = {m: m.training for m in model.modules()}
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    hooks = {m: (dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks),
                 dict(getattr(m, "_backward_pre_hooks", {}))) for m in model.modules()}
    try:
        if eval_mode:
            model.eval()
        yield model
    finally:
        for m, training in modes.items():
            m.training = training
        for p, flag, g in zip(params, flags, grads):
            p.requires_grad_(flag)
            p.grad = g
        for m, (fw, pre, bw, bwpre) in hooks.items():
            for current, saved in ((m._forward_hooks, fw), (m._forward_pre_hooks, pre), (m._backward_hooks, bw),
                                   (getattr(m, "_backward_pre_hooks", {}), bwpre)):
                for k in [k for k in current if k not in saved]:
                    del current[k]


def device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")
