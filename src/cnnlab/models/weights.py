"""Loading a local state dict into a model: safetensors, or a PyTorch file read with
``weights_only=True`` (never unpickling arbitrary objects). A mismatch names the keys."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["WeightsError", "load_state_dict_file", "read_state_dict"]

_SHOW = 8


class WeightsError(ValueError):
    """A weights file that cannot be read or does not match the model."""


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, or of a ``.pth``/``.pt``/``.bin`` state dict (also one
    nested under ``"state_dict"`` or ``"model"``, as training scripts save them)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"weights file {str(path)!r} is not a readable safetensors file ({e})") from None
    if path.suffix not in (".pth", ".pt", ".bin"):
        raise WeightsError(f"weights file {str(path)!r}: expected .safetensors, .pth, .pt or .bin")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad or unsafe file
        raise WeightsError(f"weights file {str(path)!r} could not be read as a state dict with "
                           f"weights_only=True ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {str(path)!r} does not hold a state dict (name -> tensor)")
    return obj


def _names(keys: list[str]) -> str:
    return ", ".join(keys[:_SHOW]) + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def load_state_dict_file(model: nn.Module, path: str | Path, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load the state dict in ``path`` into ``model``; return (missing, unexpected) keys.

    With ``strict`` (default) any missing or unexpected key, or a shape that differs, raises
    :class:`WeightsError` naming them; the model is left unchanged then.
    """
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch: {_names(shapes)}")
    if shapes or (strict and problems):
        raise WeightsError(f"weights file {str(path)!r} does not match {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=False)
    return missing, unexpected
