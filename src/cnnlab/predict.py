"""Classify image files with a trained run (decode, match the training preprocessing, top-k), or with a
torchvision model and its published weights (``predict tv:resnet18 --pretrained``: ImageNet's categories,
the weights' own preprocessing).

A run trained on an image folder recorded its transform (``config.json``: ``data.transform``) and
new images get exactly that one (:class:`cnnlab.data.ImageTransform`); a Fashion-MNIST run's
images are made to look like Fashion-MNIST (:func:`cnnlab.data.load_image`; decoding lives in
:mod:`cnnlab.data.decode`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from cnnlab.data import ImageDecodeError, load_image, load_run_image, normalize, read_image
from cnnlab.errors import CnnlabError, NonFiniteError
from cnnlab.models import ZOO_PREFIX, create_model
from cnnlab.train.rundir import LoadedRun

__all__ = ["PredictError", "ImageReadError", "load_image", "load_run_image", "predict_files", "predict_pretrained"]


class PredictError(CnnlabError):
    """An image or an option that cannot be used with the run; the message says which."""


#: An image file that is missing or cannot be decoded (kept under its old name: it is the data layer's error).
ImageReadError = ImageDecodeError


@torch.inference_mode()
def predict_files(run: LoadedRun, paths: Sequence[str], top: int = 3,
                  invert: str | None = None) -> list[dict[str, Any]]:
    """Top-``top`` classes with probabilities for each image file (decoded by :func:`load_run_image`)."""
    data = run.data
    classes = data["classes"]
    x = torch.stack([load_run_image(p, data, invert) for p in paths])
    model = run.model.eval()
    device = next(model.parameters()).device
    logits = model(normalize(x.to(device), data["mean"], data["std"])).float()
    bad = int((~torch.isfinite(logits)).any(1).sum())
    if bad:
        raise NonFiniteError(f"{run.run.path}: the model's outputs are not finite (NaN or inf) for {bad} of "
                             f"{len(paths)} image(s); its weights are broken (a diverged or corrupted run)")
    return _top(logits, classes, paths, top)


def _top(logits: torch.Tensor, classes: Sequence[str], paths: Sequence[str], top: int) -> list[dict[str, Any]]:
    probs = torch.softmax(logits, dim=1).cpu()
    k = min(top, len(classes))
    p, idx = probs.topk(k, dim=1)
    return [
        {"image": str(path), "top": [{"class": classes[int(i)], "index": int(i), "probability": float(q)}
                                     for q, i in zip(pp, ii)]}
        for path, pp, ii in zip(paths, p, idx)
    ]


@torch.inference_mode()
def predict_pretrained(name: str, paths: Sequence[str], *, weights: str = "DEFAULT", top: int = 3,
                       progress: bool | None = None) -> list[dict[str, Any]]:
    """Top-``top`` categories of torchvision model ``name`` (``tv:NAME``) with its published ``weights`` (from
    torch hub's cache, downloaded when missing: :mod:`cnnlab.models.pretrained`) for each image file, named by
    the weights' metadata (ImageNet's 1,000 categories) and preprocessed by the weights' own transform (resize
    the shorter side, centre crop, normalise); each file size-checked and decoded by :func:`cnnlab.data.read_image`.
    Each result also names the ``weights``."""
    if not name.startswith(ZOO_PREFIX):
        raise PredictError(f"--pretrained applies to torchvision models (tv:NAME), not {name!r}; a run directory "
                           "brings its own weights")
    model = create_model(name, pretrained=weights, progress=progress).eval()
    info = model.cnnlab_pretrained
    transform = info.transforms()
    x = torch.stack([transform(read_image(p, grayscale=False)) for p in paths])
    logits = model(x).float()
    if not torch.isfinite(logits).all():
        raise NonFiniteError(f"{name} with {info.name}: the model's outputs are not finite (NaN or inf); the weights "
                             f"file {info.path} is broken: remove it to download it again")
    return [r | {"weights": info.name} for r in _top(logits, info.categories, paths, top)]
