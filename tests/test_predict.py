"""Decoding a user's image the way the training images look."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.predict import ImageReadError, load_image


def _save(tmp_path, array, name="x.png"):
    path = tmp_path / name
    Image.fromarray(array).save(path)
    return path


def test_dark_background_is_kept_and_resized(tmp_path):
    a = np.zeros((56, 56), np.uint8)
    a[10:46, 20:36] = 200  # a light object on black, like Fashion-MNIST
    x = load_image(_save(tmp_path, a), 1, (28, 28))
    assert x.shape == (1, 28, 28) and str(x.dtype) == "torch.uint8"
    assert x[0, 0, 0] == 0 and x[0, 14, 14] > 150


def test_light_background_photo_is_inverted_in_auto_mode(tmp_path):
    a = np.full((40, 40), 250, np.uint8)
    a[10:30, 15:25] = 30  # a dark object on white, like a product photo
    path = _save(tmp_path, a)
    auto = load_image(path, 1, (28, 28))
    assert auto[0, 0, 0] < 10 and auto[0, 14, 14] > 200
    never = load_image(path, 1, (28, 28), invert="no")
    assert never[0, 0, 0] > 240 and never[0, 14, 14] < 60
    always = load_image(_save(tmp_path, 255 - a, "dark.png"), 1, (28, 28), invert="yes")
    assert always[0, 0, 0] > 240


def test_non_square_images_are_padded_not_stretched(tmp_path):
    a = np.zeros((20, 80), np.uint8)
    a[4:16, 8:72] = 255  # a wide object: 12/20 of the height, 64/80 of the width
    x = load_image(_save(tmp_path, a), 1, (28, 28), invert="no")[0].float()
    lit_rows = int((x.max(1).values > 127).sum())
    lit_cols = int((x.max(0).values > 127).sum())
    assert 3 <= lit_rows <= 6  # 12/80 of 28 = 4.2 rows once padded to a square (stretching would give ~17)
    assert 21 <= lit_cols <= 24  # 64/80 of 28 = 22.4 columns
    assert x[:8].max() < 30 and x[-8:].max() < 30  # padded with the image's own (black) background


def test_rgb_and_grayscale_channels(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, (30, 30, 3), dtype=np.uint8)
    path = _save(tmp_path, a, "c.jpg")
    assert load_image(path, 3, (32, 32)).shape == (3, 32, 32)
    assert load_image(path, 1, (28, 28)).shape == (1, 28, 28)


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="bad.jpg: not a readable image"):
        load_image(bad, 1, (28, 28))
    with pytest.raises(ImageReadError, match="missing.png: no such file"):
        load_image(tmp_path / "missing.png", 1, (28, 28))


def test_a_16_bit_png_decodes_as_its_8_bit_version(tmp_path):
    a8 = np.zeros((56, 56), np.uint8)
    a8[8:48, 14:42] = np.linspace(60, 240, 28).astype(np.uint8)  # a graded light object on black
    noise = np.random.default_rng(0).integers(-120, 120, a8.shape)
    a16 = (a8.astype(np.int64) * 257 + noise).clip(0, 65535).astype(np.uint16)  # rounds back to a8
    deep = tmp_path / "deep.png"
    Image.fromarray(a16).save(deep)
    with Image.open(deep) as im:
        assert im.mode == "I;16"
    x16 = load_image(deep, 1, (28, 28)).int()
    x8 = load_image(_save(tmp_path, a8, "eight.png"), 1, (28, 28)).int()
    assert (x16 - x8).abs().max() <= 1
    assert 100 < int(x16[0, 14, 14]) < 200  # a mid-gray, where Pillow's own "L" conversion clips to 255


def test_transparency_is_composited_over_white_as_for_image_folders(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)  # transparent black around ...
    rgba[10:30, 15:25] = (30, 30, 30, 255)  # ... an opaque dark object: a cut-out product photo
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, "RGBA").save(path)
    x = load_image(path, 1, (28, 28))  # over white, the light border is inverted to Fashion-MNIST's black
    assert x[0, 0, 0] < 10 and x[0, 14, 14] > 200
    rgb = load_image(path, 3, (28, 28), invert="no")
    assert rgb[:, 0, 0].tolist() == [255, 255, 255]


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    import time
    import warnings

    from tests.data.test_images import huge_png

    path = huge_png(tmp_path / "big.png", 20000, 20000)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning, no DecompressionBombError
        with pytest.raises(ImageReadError) as e:
            load_image(path, 1, (28, 28))
    assert time.perf_counter() - t0 < 1.0
    assert str(e.value) == (f"{path}: 20000x20000 pixels (400.0 MP) is over the limit of 64 MP "
                            "($CNNLAB_MAX_IMAGE_PIXELS); resize it first")
