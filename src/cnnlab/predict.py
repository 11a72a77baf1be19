"""Classify image files with a trained run: decode, match the training preprocessing, top-k.

A run trained on an image folder recorded its transform (``config.json``: ``data.transform``) and
new images get exactly that one (:class:`cnnlab.data.ImageTransform`); a Fashion-MNIST run's
images are made to look like Fashion-MNIST (:func:`cnnlab.data.load_image`; decoding lives in
:mod:`cnnlab.data.decode`).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from cnnlab.data import ImageDecodeError, load_image, load_run_image, normalize
from cnnlab.errors import CnnlabError, NonFiniteError
from cnnlab.train.rundir import LoadedRun

__all__ = ["PredictError", "ImageReadError", "load_image", "load_run_image", "predict_files"]


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
    probs = torch.softmax(logits, dim=1).cpu()
    k = min(top, len(classes))
    p, idx = probs.topk(k, dim=1)
    return [
        {"image": str(path), "top": [{"class": classes[int(i)], "index": int(i), "probability": float(q)}
                                     for q, i in zip(pp, ii)]}
        for path, pp, ii in zip(paths, p, idx)
    ]
