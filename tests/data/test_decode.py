"""load_drawing: a canvas drawing looks like the run's training images (Fashion-MNIST: the object centred and
filling the frame; an image-folder run: its recorded transform)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data import ImageDecodeError, load_drawing, load_run_image

FMNIST = {"in_channels": 1, "image_size": [28, 28], "name": "fashion-mnist"}


def _save(tmp_path, a, name="drawing.png"):
    path = tmp_path / name
    Image.fromarray(a).save(path)
    return path


def test_a_small_stroke_in_a_corner_is_centred_and_scaled(tmp_path):
    a = np.zeros((280, 280), np.uint8)
    a[10:50, 200:220] = 255  # tall and thin, top right
    x = load_drawing(_save(tmp_path, a), FMNIST)
    assert x.shape == (1, 28, 28) and x.dtype == torch.uint8
    rows, cols = np.nonzero(x[0].numpy() > 64)
    assert rows.min() <= 2 and rows.max() >= 25  # the long side fills the frame but for the margin
    assert abs((cols.min() + cols.max()) / 2 - 13.5) <= 1 and abs((rows.min() + rows.max()) / 2 - 13.5) <= 1


def test_an_empty_canvas_and_three_channels(tmp_path):
    assert load_drawing(_save(tmp_path, np.zeros((64, 64), np.uint8)), FMNIST).max() == 0
    a = np.zeros((100, 100), np.uint8)
    a[40:60, 40:60] = 200
    x = load_drawing(_save(tmp_path, a), {"in_channels": 3, "image_size": [32, 32]})
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[2])


def test_a_folder_run_uses_its_transform(tmp_path):
    from cnnlab.data import ImageTransform

    info = {"in_channels": 3, "image_size": [16, 16], "name": "folder:x",
            "transform": ImageTransform((16, 16), False).to_dict()}
    path = _save(tmp_path, (np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8))
    assert torch.equal(load_drawing(path, info), load_run_image(path, info))


def test_not_an_image(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"nope")
    with pytest.raises(ImageDecodeError, match="x.png"):
        load_drawing(path, FMNIST)
