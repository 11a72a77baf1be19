"""Loading a local state dict into a model: safetensors, or a PyTorch file read with
``weights_only=True`` (never unpickling arbitrary objects). A mismatch names the keys.

A weights file may come from anywhere: its size is checked before it is read (at most
:data:`MAX_WEIGHTS_BYTES`, or ``$CNNLAB_MAX_WEIGHTS_BYTES``), and a PyTorch file that holds Python
objects besides tensors is refused in cnnlab's words (which object, and how to save a plain state dict).
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from cnnlab._limits import format_bytes, size_from_env
from cnnlab.errors import CnnlabError

__all__ = ["WeightsError", "MAX_WEIGHTS_BYTES", "MAX_WEIGHTS_ENV", "load_state_dict_file", "read_state_dict",
]

_SHOW = 8

#: The largest weights file read (the largest torchvision weights, ViT-H/14's, are about 2.5 GB);
#: ``$CNNLAB_MAX_WEIGHTS_BYTES`` overrides it.
MAX_WEIGHTS_BYTES = 4 << 30
MAX_WEIGHTS_ENV = "CNNLAB_MAX_WEIGHTS_BYTES"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
#: the object a refused pickle names: "GLOBAL posix.system whose module posix is blocked",
#: "GLOBAL exec was not an allowed global" (torch drops the "builtins." prefix)
_GLOBAL = re.compile(r"GLOBAL (\S+) (?:whose module|was not an allowed)")
_REDUCE = re.compile(r"(?:unrecognized function|new object .* but got) (<[^>]*>|\S+)")
_SAVE_PLAIN = "save it with torch.save(model.state_dict()) or as .safetensors"


class WeightsError(CnnlabError):
    """A weights file that cannot be read or does not match the model."""


def _check_size(path: Path) -> None:
    """Refuse a weights file over :data:`MAX_WEIGHTS_BYTES` (or ``$CNNLAB_MAX_WEIGHTS_BYTES``) before reading it."""
    limit = size_from_env(MAX_WEIGHTS_ENV, MAX_WEIGHTS_BYTES, WeightsError)
    size = path.stat().st_size
    if size > limit:
        raise WeightsError(f"weights file {str(path)!r} is {format_bytes(size)}, over the {format_bytes(limit)} "
                           f"limit (${MAX_WEIGHTS_ENV})")


def _clean(text: str) -> str:
    """PyTorch's error text without colour codes and without its advice: the first line that says what is
    wrong (never the suggestion to load with ``weights_only=False``), its first sentence when long, at most
    200 characters."""
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines()]
    advice = ("weights_only", "weights only load failed", "check the documentation", "please file an issue",
              "trusted source", "add_safe_globals")
    keep = [ln for ln in lines if ln and not any(a in ln.lower() for a in advice)]
    first = keep[0] if keep else ""
    if len(first) > 120 and ". " in first:  # e.g. "... central directory. This is an internal miniz error. ..."
        first = first[:first.index(". ")]
    return first if len(first) <= 200 else first[:197] + "..."


def _refusal(path: Path, e: BaseException) -> WeightsError:
    """The error for a PyTorch file ``torch.load(weights_only=True)`` refused or could not read."""
    text = _ANSI.sub("", str(e))
    if isinstance(e, pickle.UnpicklingError):
        found = _GLOBAL.search(text) or _REDUCE.search(text)
        if found:
            name = found.group(1)
            if found.re is _GLOBAL and "." not in name:
                name = f"builtins.{name}"
            return WeightsError(_printable(f"weights file {str(path)!r} is not a plain state dict (it holds Python "
                                           f"objects that would have to be unpickled: {name}); refused for "
                                           f"safety: {_SAVE_PLAIN}"))
        detail = _clean(text)
        return WeightsError(_printable(f"weights file {str(path)!r} cannot be read as a plain state dict without "
                                       f"unpickling arbitrary objects (PyTorch's safe loader: {detail or 'refused'})"
                                       f"; refused for safety: {_SAVE_PLAIN}"))
    detail = _clean(text)
    return WeightsError(_printable(f"weights file {str(path)!r} is not a readable PyTorch file ({type(e).__name__}"
                                   + (f": {detail}" if detail else "") + ")"))


def _printable(message: str) -> str:
    """``message`` with every character a terminal would act on (the file chooses the names) shown as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in message)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, or of a ``.pth``/``.pt``/``.bin`` state dict (also one
    nested under ``"state_dict"`` or ``"model"``, as training scripts save them). The file's size is
    checked first; a PyTorch file is read with ``weights_only=True``, PyTorch's warnings silenced, and
    one holding anything but tensors and plain containers is refused (:class:`WeightsError`, naming the
    object it holds)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {str(path)!r} does not exist")
    _check_size(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"weights file {str(path)!r} is not a readable safetensors file ({e})") from None
    if path.suffix not in (".pth", ".pt", ".bin"):
        raise WeightsError(f"weights file {str(path)!r}: expected .safetensors, .pth, .pt or .bin")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 5": the file is refused or read anyway
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad or unsafe file
        raise _refusal(path, e) from None
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
