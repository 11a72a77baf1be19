"""Which class each image's map explains: checked once, for every attribution method."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from cnnlab.viz._state import VizError, untouched

__all__ = ["resolve_targets", "targets_for"]


def targets_for(model: nn.Module, images: torch.Tensor, target: int | Sequence[int] | None) -> torch.Tensor:
    """One class index per image: ``None`` = the predicted class; an int or a sequence, range-checked."""
    with torch.no_grad(), untouched(model):
        logits = model(images)
    return resolve_targets(logits, target)


def resolve_targets(logits: torch.Tensor, target: int | Sequence[int] | None) -> torch.Tensor:
    """:func:`targets_for` given the model's logits (N, classes) for the images."""
    n, classes = logits.shape[0], logits.shape[1]
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise VizError(f"got {t.numel()} targets for {n} images; give one, or one per image")
    bad = [int(v) for v in t if not 0 <= int(v) < classes]
    if bad:
        raise VizError(f"target class {bad[0]} is out of range; the model has {classes} classes (0-{classes - 1})")
    return t.to(logits.device).clone()
