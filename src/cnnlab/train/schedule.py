"""Learning-rate schedules as pure functions of progress, so a resumed run needs no scheduler state."""

from __future__ import annotations

import math

__all__ = ["lr_factor"]


def lr_factor(schedule: str, step: int, total_steps: int, warmup: float = 0.15) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based) of ``total_steps``.

    - ``onecycle``: linear warm-up from 0.04 over the first ``warmup`` fraction, then linear decay
      to 0 (Smith & Topin 2017, the triangular form used by fast CIFAR/Fashion-MNIST recipes).
    - ``cosine``: linear warm-up, then half a cosine down to 0.
    - ``step``: x0.1 at 50% and again at 75% of training.
    - ``constant``: 1.
    """
    if schedule not in ("onecycle", "cosine", "step", "constant"):
        raise ValueError(f"unknown schedule {schedule!r}; valid: onecycle, cosine, step, constant")
    t = step / max(total_steps, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        return 1.0 if t < 0.5 else 0.1 if t < 0.75 else 0.01
    if warmup > 0 and t < warmup:
        return 0.04 + 0.96 * t / warmup
    u = (t - warmup) / max(1.0 - warmup, 1e-12)
    if schedule == "onecycle":
        return max(0.0, 1.0 - u)
    return 0.5 * (1.0 + math.cos(math.pi * min(u, 1.0)))
