"""Decoding a user's image file the way a run's training images were (``cnnlab predict``, the
visualisations, the explorer): an image-folder run recorded its transform
(:class:`~cnnlab.data.folder.ImageTransform`); a Fashion-MNIST run's images are made to look like
Fashion-MNIST (:func:`load_image`). Every file goes through :func:`~cnnlab.data.images.read_image`
(size-checked before it is decoded)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from cnnlab.data.folder import ImageTransform
from cnnlab.data.images import read_image
from cnnlab.data.splits import DatasetError

__all__ = ["load_drawing", "load_image", "load_run_image"]


def load_image(path: str | os.PathLike, in_channels: int, size: Sequence[int], invert: str = "auto") -> torch.Tensor:
    """Decode ``path`` (PNG, JPEG, BMP, ... any size) to uint8 (C, H, W) the way the run was trained.

    The file is decoded by :func:`cnnlab.data.read_image`, as image folders' files are (refused before
    decoding over its byte or pixel limit; EXIF orientation; 16-bit, 32-bit and float images scaled to
    8 bits; alpha over white). The image is then padded to a square with its own background colour
    (the median of its border), then resized with antialiasing. Fashion-MNIST shows light objects on
    a black background; ``invert="auto"`` inverts an image whose border is light (a photo on white),
    ``"yes"`` always, ``"no"`` never.
    """
    im = read_image(path, grayscale=in_channels == 1)
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
        raise DatasetError(f"--invert applies to runs trained on Fashion-MNIST; this run was trained on "
                           f"{data.get('name', 'an image folder')} and decodes images with its recorded transform")
    try:
        transform = ImageTransform.from_dict(data["transform"])
    except ValueError as e:
        raise DatasetError(str(e)) from None
    return torch.from_numpy(transform(path))


def load_drawing(path: str | os.PathLike, data: Mapping[str, Any], *, threshold: int = 32,
                 margin: float = 0.04) -> torch.Tensor:
    """A drawing (light strokes on a dark canvas, any size) as uint8 (C, H, W) the way the run's training
    images look: an image-folder run's recorded transform; otherwise centred and scaled as Fashion-MNIST's
    objects are: the strokes' bounding box (pixels brighter than ``threshold``), padded to a square with
    ``margin`` of its side on every edge, resized with antialiasing. An empty canvas stays black."""
    if "transform" in data:
        return load_run_image(path, data)
    in_channels, size = int(data["in_channels"]), data["image_size"]
    a = np.asarray(read_image(path, grayscale=True))
    rows, cols = np.nonzero(a > threshold)
    if len(rows):
        a = a[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    h, w = a.shape
    side = int(round(max(h, w) * (1 + 2 * margin)))
    canvas = np.zeros((side, side), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top:top + h, left:left + w] = a
    im = Image.fromarray(canvas).resize((int(size[1]), int(size[0])), Image.Resampling.LANCZOS)
    t = torch.from_numpy(np.array(im, dtype=np.uint8)).unsqueeze(0)
    return t.expand(in_channels, -1, -1).contiguous()
