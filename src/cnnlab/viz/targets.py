"""Which class each image's map explains: checked once, for every attribution method."""

from __future__ import annotations

import difflib
from typing import Sequence

import torch
import torch.nn as nn

from cnnlab.viz._state import VizError, untouched

__all__ = ["class_index", "resolve_targets", "targets_for"]


def class_index(target: int | str | None, classes: Sequence[str] | None) -> int | None:
    """``--target`` as a class index: an index (``242``, or the string ``"242"``) stays one; a class name from
    the run's ``classes`` (``"boxer"``, ``"tiger cat"``: case and surrounding spaces ignored) becomes its
    index. An unknown name is a :class:`VizError` that names the closest class names."""
    if target is None or isinstance(target, int):
        return target
    text = str(target).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    names = [str(c) for c in classes or []]
    folded = [c.strip().casefold() for c in names]
    if text.casefold() in folded:
        return folded.index(text.casefold())
    close = difflib.get_close_matches(text.casefold(), folded, n=3, cutoff=0.6)
    hint = (f"; did you mean {', '.join(repr(names[folded.index(c)]) for c in close)}?" if close else
            f"; give a class index (0-{len(names) - 1}) or one of: {', '.join(names[:12])}"
            + (", ..." if len(names) > 12 else "") if names else "; give a class index")
    raise VizError(f"--target {text!r} is not a class of this model{hint}")


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
