"""What every compression method gives back, and the fine-tuning hook it may call.

A method is two functions in its own module:

- ``compress_<method>(model, *, <settings>, finetune=None, calibration=None) -> Compressed``: compress a
  trained float model (a copy it may modify; the caller keeps the original), fine-tuning through
  ``finetune`` where the method retrains;
- ``rebuild_<method>(base, tensors, meta) -> nn.Module``: from a freshly built, untrained model of the
  same architecture (``base``), the stored ``tensors`` and ``meta``, the very model ``compress`` returned
  (same outputs, bit for bit). Nothing else is stored, so this proves the artifact is complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import torch
import torch.nn as nn

from cnnlab.errors import CnnlabError

__all__ = ["CompressError", "Compressed", "Finetune"]


class CompressError(CnnlabError):
    """A setting or a model a method cannot take; the message is one line naming the value (and the layer)."""


@dataclass
class Compressed:
    """``model``: the compressed model in eval mode; it takes the float input the original took and runs
    through :func:`cnnlab.train.evaluate`. ``tensors``: the artifact as stored -- packed bits, codebooks,
    int8 values, sparse indices -- each a CPU tensor (safetensors holds them; nothing is pickled).
    ``meta``: JSON-able values :func:`rebuild_<method>` needs besides the tensors (kept channels, bits,
    layer names). ``report``: JSON-able facts for ``compression.json`` (per-layer sparsity, bits, which
    layers stayed float and why)."""

    model: nn.Module
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)


class Finetune(Protocol):
    """Train ``model`` in place for ``epochs`` epochs on the run's training images (its recipe: optimizer,
    augmentation, label smoothing; a lower learning rate), then leave it in eval mode.

    ``lr_scale`` multiplies the fine-tuning learning rate. ``after_step(model)`` runs after every optimizer
    step, under ``torch.no_grad()``: a method re-applies a constraint there (e.g. weights fixed to powers of
    two, shared values) that a gradient step would break. Masks held by parametrizations or
    ``torch.nn.utils.prune`` need no hook. Returns the history (one dict per epoch)."""

    def __call__(self, model: nn.Module, epochs: int, *, lr_scale: float = 1.0,
                 after_step: Callable[[nn.Module], None] | None = None) -> list[dict[str, Any]]: ...


#: Calibration batches: float input tensors, normalised as for training (N, C, H, W).
Calibration = Iterable[torch.Tensor]
