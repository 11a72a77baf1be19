"""Where and in what precision cnnlab computes: ``--device`` and ``--precision`` resolved for this machine, and
the autocast context both training and evaluation run under."""

from __future__ import annotations

import contextlib

import torch

from cnnlab._env import cpu_has_bf16
from cnnlab.train.config import ConfigError

__all__ = ["resolve_device", "resolve_precision", "autocast"]


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; anything else is a
    :class:`ConfigError` naming the valid values."""
    index = name[5:] if name.startswith("cuda:") else None
    if name not in ("auto", "cpu", "cuda") and not (index is not None and index.isdigit()):
        raise ConfigError(f"--device {name!r} is not valid; choose one of: auto, cpu, cuda, cuda:N")
    if index is not None and torch.cuda.is_available() and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` is bf16 where the hardware computes it natively (CUDA with bf16, or a CPU with
    AVX512-BF16/AMX, which oneDNN uses), fp32 elsewhere."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision == "bf16"``, else nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
