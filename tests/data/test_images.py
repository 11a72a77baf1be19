"""Opening untrusted image files (cnnlab.data.images): the byte and pixel limits, checked before decoding and
without Pillow's own warnings, and the one conversion of every mode to 8-bit "L" or "RGB"."""

from __future__ import annotations

import os
import struct
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import ImageDecodeError, ImageLimitError, ImageTooLargeError, open_image, read_image
from cnnlab.data.images import MAX_IMAGE_PIXELS, max_image_pixels


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` 8-bit gray pixels, with only a few bytes of pixel data:
    anything that decodes it fails on the truncated data instead of reporting the size."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + _chunk(b"IEND", b""))
    return path


@pytest.fixture
def no_warnings():
    """Any warning (Pillow's DecompressionBombWarning among them) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.usefixtures("no_warnings")
@pytest.mark.parametrize("side", [20000, 10000, 8001])  # over twice Pillow's limit, over Pillow's, over cnnlab's only
def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path, side):
    path = huge_png(tmp_path / "big.png", side, side)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLargeError) as e:
        read_image(path, grayscale=True)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    mp = side * side / 1e6
    assert str(e.value) == (f"{path}: {side}x{side} pixels ({mp:.1f} MP) is over the limit of 64 MP "
                            "($CNNLAB_MAX_IMAGE_PIXELS); resize it first")
    assert seconds < 1.0 and peak < 8 * 2**20  # nothing decoded: a 20000x20000 gray image is 400 MB


def test_the_limit_comes_from_the_argument_then_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    Image.new("L", (100, 80), 7).save(path)
    assert max_image_pixels() == MAX_IMAGE_PIXELS == 64_000_000
    with pytest.raises(ImageTooLargeError, match=r"100x80 pixels \(0.0 MP\) is over the limit of 0.007999 MP"):
        read_image(path, True, max_pixels=7999)
    assert np.asarray(read_image(path, True, max_pixels=8000)).shape == (80, 100)
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_PIXELS", "7.9K")
    with pytest.raises(ImageTooLargeError, match=r"over the limit of 0.0079 MP \(\$CNNLAB_MAX_IMAGE_PIXELS\)"):
        read_image(path, True)
    assert np.asarray(read_image(path, True, max_pixels=8000)).shape == (80, 100)  # the argument wins
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_PIXELS", "100MP")
    assert max_image_pixels() == 100_000_000
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ImageLimitError, match=r"\$CNNLAB_MAX_IMAGE_PIXELS='lots': give a positive pixel count"):
        read_image(path, True)
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_PIXELS", "500M")  # Pillow refuses above 2 x 89,478,485 whatever we say
    with pytest.raises(ImageLimitError, match=r"at most 178,956,970 .*Pillow's own hard limit"):
        max_image_pixels()
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ImageLimitError, match="max_pixels"):
            max_image_pixels(bad)


def test_pillows_global_limit_is_never_changed_and_its_warning_never_shown(tmp_path, monkeypatch):
    before = Image.MAX_IMAGE_PIXELS
    filters = list(warnings.filters)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # an application's lower limit: warns above, refuses above 2000
    Image.new("L", (40, 40), 9).save(tmp_path / "warned.png")  # 1600 pixels: Pillow would warn
    Image.new("L", (50, 50), 9).save(tmp_path / "refused.png")  # 2500 pixels: Pillow would refuse
    assert max_image_pixels() == 2000  # cnnlab's limit never above Pillow's hard limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.asarray(read_image(tmp_path / "warned.png", True)).max() == 9
        with pytest.raises(ImageTooLargeError, match=r"refused\.png: 50x50 pixels .* over the limit of 0.002 MP"):
            read_image(tmp_path / "refused.png", True)
    monkeypatch.undo()
    assert Image.MAX_IMAGE_PIXELS == before and warnings.filters == filters


def test_the_byte_limit_and_files_that_are_not_regular(tmp_path, monkeypatch):
    path = tmp_path / "x.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(path)
    size = path.stat().st_size
    with pytest.raises(ImageTooLargeError, match=rf"x\.png: {size} bytes is over the limit of {size - 1} bytes for an "
                                                  r"image file \(\$CNNLAB_MAX_IMAGE_BYTES\)"):
        read_image(path, False, max_bytes=size - 1)
    assert np.asarray(read_image(path, False, max_bytes=size)).shape == (64, 64, 3)
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_BYTES", "0.01K")
    with pytest.raises(ImageTooLargeError, match="over the limit of 10 bytes"):
        read_image(path, False)
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_BYTES", "1M")
    assert np.asarray(read_image(path, False)).shape == (64, 64, 3)
    monkeypatch.setenv("CNNLAB_MAX_IMAGE_BYTES", "big")
    with pytest.raises(ImageLimitError, match=r"\$CNNLAB_MAX_IMAGE_BYTES='big'"):
        read_image(path, False)
    monkeypatch.delenv("CNNLAB_MAX_IMAGE_BYTES")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageDecodeError, match=r"folder\.png: not a regular file"):
        read_image(tmp_path / "folder.png", False)
    if hasattr(os, "mkfifo"):  # reading a FIFO would block forever
        os.mkfifo(tmp_path / "pipe.png")
        with pytest.raises(ImageDecodeError, match=r"pipe\.png: not a regular file"):
            read_image(tmp_path / "pipe.png", False)
    with pytest.raises(ImageDecodeError, match=r"gone\.png: no such file"):
        read_image(tmp_path / "gone.png", False)


def test_open_image_is_lazy_and_names_the_file_when_decoding_fails(tmp_path):
    path = huge_png(tmp_path / "cut.png", 300, 200)  # within the limits; its pixel data is cut short
    with open_image(path) as im:
        assert im.size == (300, 200) and im.mode == "L"
    with pytest.raises(ImageDecodeError, match=r"cut\.png: not a readable image \("):
        with open_image(path) as im:
            im.load()


def _deep_images(tmp_path: Path, a8: np.ndarray) -> dict[str, Path]:
    """``a8`` saved at 16 bits (PNG "I;16", PGM "I"), as 32-bit signed integers (TIFF "I") and as float (TIFF "F")."""
    paths = {}
    a16 = np.rint(a8.astype(np.float64) * 257 + np.random.default_rng(0).integers(-100, 100, a8.shape)).clip(0, 65535)
    Image.fromarray(a16.astype(np.uint16)).save(paths.setdefault("I;16", tmp_path / "deep.png"))
    h, w = a8.shape
    paths["pgm"] = tmp_path / "deep.pgm"
    paths["pgm"].write_bytes(b"P5 %d %d 65535\n" % (w, h) + a16.astype(">u2").tobytes())
    i32 = np.rint(a8.astype(np.float64) * ((2**31 - 1) / 255)).astype(np.int32)
    Image.fromarray(i32).save(paths.setdefault("I", tmp_path / "deep32.tif"))
    Image.fromarray(a8.astype(np.float32) / 255).save(paths.setdefault("F", tmp_path / "float.tif"))
    return paths


def test_deep_images_are_scaled_by_their_nominal_range_not_clipped(tmp_path):
    a8 = np.random.default_rng(1).integers(0, 256, (20, 30)).astype(np.uint8)
    for mode, path in _deep_images(tmp_path, a8).items():
        with Image.open(path) as im:
            assert im.mode == ("I" if mode == "pgm" else mode)
        x = np.asarray(read_image(path, grayscale=True))
        assert x.shape == a8.shape and np.abs(x.astype(int) - a8).max() <= 1, mode
        rgb = np.asarray(read_image(path, grayscale=False))
        assert rgb.shape == (20, 30, 3) and (rgb == x[..., None]).all(), mode


def test_float_values_outside_zero_to_one_are_clipped(tmp_path):
    Image.fromarray(np.array([[-0.5, 0.0, 0.5, 1.0, 7.0, np.nan]], np.float32)).save(tmp_path / "f.tif")
    assert np.asarray(read_image(tmp_path / "f.tif", True)).tolist() == [[0, 0, 128, 255, 255, 0]]
