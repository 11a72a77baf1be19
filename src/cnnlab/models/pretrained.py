"""torchvision's published weights by name: ``--pretrained [DEFAULT|IMAGENET1K_V1|...]`` on a ``tv:NAME`` model.

The weights are torchvision's own (``torchvision.models.get_weight``): their URL, their categories and their
preprocessing come from its weights API. The file goes where ``torch.hub`` keeps it,
``torch.hub.get_dir()/checkpoints/<file name of the URL>`` (``$TORCH_HOME/hub``, ``~/.cache/torch/hub``), so a
file torchvision or torch.hub fetched before is used as it is, and a file placed there by hand works offline.
A missing file is fetched by :func:`cnnlab.data.download.download` (resumable, a progress bar) and checked as
``torch.hub``'s ``check_hash`` does: the SHA-256 of the file starts with the hex digits after the last ``-`` of
its name (``resnet18-f37072fd.pth``); a file that fails is removed.

The model is then built by torchvision's own builder with those weights (``get_model(arch, weights=W)``: its
``num_classes``, ``transform_input``, ``aux_logits``, image size and key remapping, exactly as torchvision does),
except that the state dict it loads is read by :func:`cnnlab.models.weights.read_state_dict` -- size-checked,
``torch.load(weights_only=True)`` -- never by ``torch.hub.load_state_dict_from_url``, which unpickles. A file that
does not fit the architecture is a :class:`~cnnlab.models.weights.WeightsError`; a file that cannot be fetched is a
:class:`PretrainedUnavailable` naming the weights, the URL and the exact path where it can be put by hand.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch.nn as nn

from cnnlab._limits import size_from_env
from cnnlab.data.download import DownloadError, download, mirrored, url_name
from cnnlab.errors import CnnlabError
from cnnlab.models.info import ModelArgumentError
from cnnlab.models.weights import MAX_WEIGHTS_BYTES, MAX_WEIGHTS_ENV, WeightsError, read_state_dict

__all__ = ["PretrainedUnavailable", "Pretrained", "resolve_weights", "weights_path", "fetch_weights",
           "build_pretrained", "DEFAULT_WEIGHTS"]

#: ``--pretrained`` with no name: torchvision's recommended weights for the architecture.
DEFAULT_WEIGHTS = "DEFAULT"
_HASH = re.compile(r"-([a-f0-9]*)\.")  # torch.hub.HASH_REGEX
_LOCK = threading.Lock()


class PretrainedUnavailable(CnnlabError):
    """Published weights that are neither in the hub cache nor downloadable now (offline, a failed download)."""


@dataclass(frozen=True)
class Pretrained:
    """What a pretrained model was built with: the weights (``ResNet18_Weights.IMAGENET1K_V1``), the file, the
    categories its outputs name, and its preprocessing (resize the shorter side, crop the centre, normalise)."""

    weights: Any
    path: Path

    @property
    def name(self) -> str:
        return str(self.weights)

    @property
    def categories(self) -> list[str]:
        return list(self.weights.meta["categories"])

    def transforms(self):
        """torchvision's preprocessing for these weights (a callable: PIL image -> normalised float tensor)."""
        return self.weights.transforms()

    def describe(self) -> dict:
        t = self.transforms()
        one = lambda v: int(v[0] if isinstance(v, (list, tuple)) else v)  # noqa: E731
        return {"weights": self.name, "url": self.weights.url, "file": str(self.path), "crop_size": one(t.crop_size),
                "resize_size": one(t.resize_size), "mean": list(t.mean), "std": list(t.std),
                "interpolation": str(getattr(t.interpolation, "value", t.interpolation))}


def _tvm():
    import torchvision.models as tvm

    return tvm


def resolve_weights(arch: str, name: str | None = None):
    """torchvision's weights ``name`` for ``arch`` (``DEFAULT``, ``IMAGENET1K_V1``, or the full
    ``ResNet18_Weights.IMAGENET1K_V1``); a :class:`ModelArgumentError` listing the valid names otherwise."""
    tvm = _tvm()
    name = DEFAULT_WEIGHTS if name is None else name
    try:
        enum = tvm.get_model_weights(arch)
    except (ValueError, KeyError):
        raise ModelArgumentError(f"tv:{arch} has no published weights in torchvision") from None
    valid = [DEFAULT_WEIGHTS, *(w.name for w in enum)]
    short = name.split(".", 1)[1] if name.startswith(enum.__name__ + ".") else name
    if short not in valid:
        raise ModelArgumentError(f"--pretrained {name!r} is not a weights name of tv:{arch}; valid: {', '.join(valid)}")
    return enum[short]


def weights_path(weights) -> Path:
    """Where ``torch.hub`` keeps (and cnnlab looks for) the file of ``weights``."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / url_name(weights.url)


def fetch_weights(weights, *, mirror: str | None = None, progress: bool | None = None) -> Path:
    """The hub-cache file of ``weights``, downloaded (resumable, SHA-256 prefix checked) if it is not there."""
    path = weights_path(weights)
    if path.is_file():
        return path
    url = mirrored(weights.url, mirror)
    found = _HASH.search(url_name(weights.url))
    try:
        download(url, path, sha256_prefix=found.group(1) if found and found.group(1) else None,
                 max_bytes=size_from_env(MAX_WEIGHTS_ENV, MAX_WEIGHTS_BYTES, WeightsError), progress=progress)
    except DownloadError as e:
        raise PretrainedUnavailable(f"{weights}: {e}; without a network, download {weights.url} elsewhere and place "
                                    f"it at {path}") from None
    return path


@contextmanager
def _state_dict_from(weights, state: dict) -> Iterator[None]:
    """While held, ``weights.get_state_dict(...)`` (what torchvision's builders call) returns ``state`` (read
    safely by cnnlab) instead of going through ``torch.hub.load_state_dict_from_url`` (which unpickles)."""
    cls = type(weights)
    own = cls.__dict__.get("get_state_dict")
    with _LOCK:
        setattr(cls, "get_state_dict", lambda self, *args, **kwargs: state)
        try:
            yield
        finally:
            if own is None:
                delattr(cls, "get_state_dict")
            else:
                setattr(cls, "get_state_dict", own)


def _builder_kwargs(arch: str, weights, model: nn.Module) -> dict[str, Any]:
    """The constructor arguments torchvision's builder set for these weights (so that the recorded spec
    rebuilds the same architecture without them)."""
    extra: dict[str, Any] = {"num_classes": len(weights.meta["categories"])}
    if arch in ("googlenet", "inception_v3"):
        extra |= {"transform_input": bool(model.transform_input), "aux_logits": bool(model.aux_logits),
                  "init_weights": False}
    if arch.startswith("vit_"):
        extra["image_size"] = int(weights.meta["min_size"][0])
    if arch.startswith("maxvit"):
        extra["input_size"] = [int(v) for v in weights.meta["min_size"]]
    return extra


def _mismatch(text: str) -> str:
    """torch's ``load_state_dict`` error in one line: its kinds of problem with the first few keys."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Error(s) in loading")]
    one = "; ".join(lines)
    return one if len(one) <= 300 else one[:297] + "..."


def build_pretrained(arch: str, name: str | None = None, *, mirror: str | None = None, progress: bool | None = None,
                     **kwargs: Any) -> tuple[nn.Module, Pretrained, dict[str, Any]]:
    """torchvision's ``arch`` with its published weights ``name`` (see the module docstring): (model in eval
    mode, what it was built with, the constructor arguments that rebuild its architecture)."""
    weights = resolve_weights(arch, name)
    path = fetch_weights(weights, mirror=mirror, progress=progress)
    state = read_state_dict(path)
    try:
        with _state_dict_from(weights, state):
            model = _tvm().get_model(arch, weights=weights, **kwargs)
    except RuntimeError as e:
        if "state_dict" not in str(e):
            raise
        raise WeightsError(f"weights file {str(path)!r} does not match tv:{arch} ({weights}): {_mismatch(str(e))}; "
                           "remove it to download it again") from None
    except ValueError as e:  # the builder's own check of an argument these weights fix (num_classes=10 with ImageNet's)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelArgumentError(f"tv:{arch} with {weights}: {first}") from None
    return model.eval(), Pretrained(weights, path), {**kwargs, **_builder_kwargs(arch, weights, model)}
