"""What a result was measured on and with: the machine (CPU model, its bf16 support, threads, GPU) and the code's
revision, recorded in every ``config.json`` and every bench result."""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

from cnnlab import __version__

__all__ = ["machine_info", "code_revision", "cpu_flags", "cpu_has_bf16", "onednn_version"]

_PACKAGE = Path(__file__).resolve().parent


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags") and key not in info:
                    info[key] = value.strip()
                if len(info) == 2:
                    break
    except OSError:
        pass
    return info


def cpu_flags() -> dict[str, bool]:
    """The CPU features that decide cnnlab's speed: AVX-512, its BF16 instructions, AMX (BF16 and INT8 tiles)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return {name: name in flags for name in ("avx512f", "avx512_bf16", "amx_bf16", "amx_int8")}


_X86 = ("x86_64", "amd64", "i386", "i686")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX on x86) and oneDNN uses it: what
    ``--precision auto`` and every recorded ``onednn_bf16`` ask.

    oneDNN also accepts bf16 on AVX-512 CPUs without the BF16 instructions, by emulation, and PyTorch's own
    check says yes there; on an AVX2-only CPU bf16 convolutions fall back to reference kernels tens of times
    slower than fp32. So on x86 the instructions themselves must be in ``/proc/cpuinfo``'s flags.
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    if platform.machine().lower() in _X86:
        flags = cpu_flags()
        return flags["avx512_bf16"] or flags["amx_bf16"]
    return True  # elsewhere (aarch64) PyTorch's check already asks for the CPU's own bf16 instructions


@functools.lru_cache(maxsize=1)
def code_revision() -> str:
    """``git describe --always --dirty`` of the checkout cnnlab runs from (e.g. ``b776780-dirty``), else
    ``cnnlab <version> src:<sha256 of the package's .py files, 12 hex>`` for an installed copy."""
    root = _PACKAGE.parent.parent
    if (root / ".git").exists():
        try:
            r = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
                               capture_output=True, text=True, timeout=10)
            if r.returncode == 0 and r.stdout.strip():
                return r.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    h = hashlib.sha256()
    for p in sorted(_PACKAGE.rglob("*.py")):
        h.update(str(p.relative_to(_PACKAGE)).encode() + b"\0" + p.read_bytes())
    return f"cnnlab {__version__} src:{h.hexdigest()[:12]}"


@functools.lru_cache(maxsize=1)
def onednn_version() -> str | None:
    """The oneDNN (formerly MKL-DNN) version torch was built with, e.g. ``3.12.0``; None without it."""
    found = re.search(r"(?:oneDNN|MKL-DNN) v([\w.]+)", torch.__config__.show())
    return found.group(1) if found else None


def machine_info(device: Any = None) -> dict[str, Any]:
    """The machine and software a result comes from: cnnlab, torch, oneDNN and Python versions, the CPU model and
    :func:`cpu_flags`, whether oneDNN computes bf16 natively, CPU and torch thread counts, the device and GPU,
    and :func:`code_revision`."""
    return {
        "cnnlab": __version__,
        "code_revision": code_revision(),
        "torch": torch.__version__,
        "onednn": onednn_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpuinfo().get("model name") or platform.processor() or platform.machine(),
        "cpu_flags": cpu_flags(),
        "onednn_bf16": cpu_has_bf16(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else None,
        "gpu": torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else None,
    }
