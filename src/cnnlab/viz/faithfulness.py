"""Faithfulness of an attribution map: deletion and insertion curves (Petsiuk et al., "RISE", BMVC 2018).

Deletion removes pixels (sets them to the baseline) in decreasing order of attribution and follows the
target class probability: a faithful map makes it fall fast (small area under the curve). Insertion
starts from the baseline image and adds pixels in the same order: a faithful map makes it rise fast
(large area).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.viz._state import VizError, untouched
from cnnlab.viz.attribution import as_baseline

__all__ = ["deletion_insertion"]


def deletion_insertion(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor, *,
                       steps: int = 20, baseline: float | torch.Tensor = 0.0, batch: int = 512) -> dict:
    """Curves (N, steps + 1) of the target probability after removing (deletion) or keeping (insertion)
    the top ``k / steps`` fraction of pixels by ``maps`` (N, H, W), and their areas (trapezoid rule over
    the fraction in [0, 1], averaged over images). A removed pixel takes ``baseline``: one value, one
    per channel (:func:`cnnlab.viz.attribution.black`), or an image per image, shaped as ``images`` (a
    blurred copy: :func:`cnnlab.viz.evaluate.blurred`)."""
    n, c, h, w = images.shape
    if maps.shape != (n, h, w):
        raise VizError(f"maps must have shape {(n, h, w)} (one per image, at input resolution); got {tuple(maps.shape)}")
    if steps < 1:
        raise VizError(f"steps must be a positive integer; got {steps}")
    if isinstance(baseline, torch.Tensor) and baseline.shape == images.shape:
        fill = baseline.to(images)  # a replacement image per image (e.g. a blurred copy)
    else:
        fill = as_baseline(baseline, images)
        fill = torch.full_like(images, fill) if not isinstance(fill, torch.Tensor) else fill.expand_as(images)
    order = maps.reshape(n, -1).argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=order.device).expand(n, -1))
    fractions = torch.linspace(0, 1, steps + 1)
    counts = (fractions * h * w).round().long()
    curves = {}
    with untouched(model), torch.no_grad():
        for kind in ("deletion", "insertion"):
            probs = []
            for k in counts:
                top = (rank < k).reshape(n, 1, h, w)  # the k most attributed pixels
                keep = ~top if kind == "deletion" else top
                x = torch.where(keep, images, fill)
                p = torch.cat([F.softmax(model(x[i:i + batch]), 1) for i in range(0, n, batch)])
                probs.append(p.gather(1, targets.view(-1, 1))[:, 0])
            curves[kind] = torch.stack(probs, 1).cpu()
    area = {k: float(torch.trapezoid(v, fractions, dim=1).mean()) for k, v in curves.items()}
    return {"fractions": fractions, "deletion": curves["deletion"], "insertion": curves["insertion"],
            "deletion_auc": area["deletion"], "insertion_auc": area["insertion"]}
