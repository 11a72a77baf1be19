"""Weights and resumable checkpoints as safetensors (never pickle), written atomically.

A checkpoint is one file, ``checkpoint/last.safetensors``: the model's state dict under
``model/``, the optimizer's tensors under ``optim/<param index>/<name>``, and everything else
(epoch, step, optimizer hyper-parameters, history) as JSON in the file's metadata. One file means
one atomic rename: a run killed at any moment finds either the old checkpoint or the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from cnnlab._io import atomic_path
from cnnlab.errors import CnnlabError

__all__ = ["CheckpointError", "save_weights", "load_weights", "save_checkpoint", "load_checkpoint"]

FORMAT = "cnnlab-checkpoint-1"


class CheckpointError(CnnlabError):
    """A weights or checkpoint file is missing, corrupt or does not fit the model."""


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def save_weights(model: nn.Module, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Save ``model.state_dict()`` (parameters and buffers) to a safetensors file, atomically."""
    tensors = {k: _cpu(v).clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def _read(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or unreadable safetensors file ({e})") from None


def load_weights(model: nn.Module, path: str | os.PathLike, *, strict: bool = True) -> nn.Module:
    """Load a safetensors state dict into ``model``; a mismatch names the missing and unexpected keys."""
    state = _read(path)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        first = " ".join(str(e).strip().splitlines())
        raise CheckpointError(f"{path}: does not fit {type(model).__name__}: {first[:500]}") from None
    return model


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{name}"] = _cpu(value).clone()
            else:
                scalars[f"{pid}/{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    """Write model + optimizer + JSON ``state`` to one safetensors file, atomically."""
    tensors = {f"model/{k}": _cpu(v).clone() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    meta = {"format": FORMAT, "state": json.dumps(state), "optimizer": json.dumps(opt_meta)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Restore ``model`` (and ``optimizer``) from :func:`save_checkpoint`'s file; return its state."""
    path = Path(path)
    tensors = _read(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cnnlab checkpoint (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        state = json.loads(meta["state"])
        opt_meta = json.loads(meta["optimizer"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({e})") from None
    model_sd = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    try:
        model.load_state_dict(model_sd)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: does not fit {type(model).__name__}: {str(e).splitlines()[0]}") from None
    if optimizer is not None:
        opt_state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim/"):
                _, pid, name = key.split("/", 2)
                opt_state.setdefault(int(pid), {})[name] = value
        for key, value in opt_meta["scalars"].items():
            pid, name = key.split("/", 1)
            opt_state.setdefault(int(pid), {})[name] = value
        groups = opt_meta["param_groups"]
        for saved, live in zip(groups, optimizer.param_groups):  # JSON turned tuples (betas) into lists
            for k, v in live.items():
                if isinstance(v, tuple) and isinstance(saved.get(k), list):
                    saved[k] = tuple(saved[k])
        optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    return state
