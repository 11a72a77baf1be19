"""Classify image files with a trained run: decode, match the training preprocessing, top-k.

A run trained on an image folder recorded its transform (``config.json``: ``data.transform``) and
new images get exactly that one (:class:`cnnlab.data.ImageTransform`); a Fashion-MNIST run's
images are made to look like Fashion-MNIST (:func:`load_image`).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from cnnlab.data import ImageDecodeError, ImageTransform, normalize, read_image
from cnnlab.errors import CnnlabError, NonFiniteError
from cnnlab.train.rundir import LoadedRun

__all__ = ["PredictError", "ImageReadError", "load_image", "load_run_image", "predict_files"]


class PredictError(CnnlabError):
    """An image or an option that cannot be used with the run; the message says which."""


class ImageReadError(PredictError):
    pass


def load_image(path: str | os.PathLike, in_channels: int, size: Sequence[int], invert: str = "auto") -> torch.Tensor:
    """Decode ``path`` (PNG, JPEG, BMP, ... any size) to uint8 (C, H, W) the way the run was trained.

    The file is decoded by :func:`cnnlab.data.read_image`, as image folders' files are (refused before
    decoding over its byte or pixel limit; EXIF orientation; 16-bit, 32-bit and float images scaled to
    8 bits; alpha over white). The image is then padded to a square with its own background colour
    (the median of its border), then resized with antialiasing. Fashion-MNIST shows light objects on
    a black background; ``invert="auto"`` inverts an image whose border is light (a photo on white),
    ``"yes"`` always, ``"no"`` never.
    """
    from PIL import Image, ImageOps

    try:
        im = read_image(path, grayscale=in_channels == 1)
    except ImageDecodeError as e:
        raise ImageReadError(str(e)) from None
    a = np.asarray(im)
    border = np.concatenate([a[0].reshape(-1, in_channels), a[-1].reshape(-1, in_channels),
                             a[:, 0].reshape(-1, in_channels), a[:, -1].reshape(-1, in_channels)])
    bg = tuple(int(v) for v in np.median(border, axis=0))
    if invert == "yes" or (invert == "auto" and np.mean(bg) > 127):
        im = ImageOps.invert(im)
        bg = tuple(255 - v for v in bg)
    w, h = im.size
    side = max(w, h)
    canvas = Image.new(im.mode, (side, side), bg[0] if in_channels == 1 else bg)
    canvas.paste(im, ((side - w) // 2, (side - h) // 2))
    canvas = canvas.resize((int(size[1]), int(size[0])), Image.Resampling.LANCZOS)
    t = torch.from_numpy(np.array(canvas, dtype=np.uint8))
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def load_run_image(path: str | os.PathLike, data: Mapping[str, Any], invert: str | None = None) -> torch.Tensor:
    """Decode ``path`` to uint8 (C, H, W) as the run's training images were (``data``: the run's
    ``config.json["data"]``): with its recorded transform (image-folder runs), else :func:`load_image`
    (``invert``: ``"auto"`` when None; image-folder runs take none)."""
    if "transform" not in data:
        return load_image(path, data["in_channels"], data["image_size"], invert or "auto")
    if invert is not None:
        raise PredictError(f"--invert applies to runs trained on Fashion-MNIST; this run was trained on "
                           f"{data.get('name', 'an image folder')} and decodes images with its recorded transform")
    try:
        transform = ImageTransform.from_dict(data["transform"])
    except ValueError as e:
        raise PredictError(str(e)) from None
    try:
        return torch.from_numpy(transform(path))
    except ImageDecodeError as e:
        raise ImageReadError(str(e)) from None


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
