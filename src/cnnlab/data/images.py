"""The one way cnnlab opens an image file a user gave it: size limits first, then one decoding to 8 bits.

:func:`open_image` checks, before any pixel is decoded, that the path is a regular file of at most
:data:`MAX_IMAGE_BYTES` bytes (256 MiB; ``$CNNLAB_MAX_IMAGE_BYTES`` or ``max_bytes``) and that the
size its header declares is at most :data:`MAX_IMAGE_PIXELS` pixels (64 MP; ``$CNNLAB_MAX_IMAGE_PIXELS``
or ``max_pixels``). That is the only pixel limit: Pillow's own decompression-bomb check
(``PIL.Image.MAX_IMAGE_PIXELS``, left as it is) never prints its ``DecompressionBombWarning`` and its
``DecompressionBombError`` is reported in cnnlab's words; since Pillow refuses outright above twice its
limit (179 MP by default), cnnlab's limit cannot be set higher than that.

:func:`read_image` decodes what :func:`open_image` let through to "L" or "RGB", the same for training
images (:class:`cnnlab.data.ImageTransform`) and for ``cnnlab predict``:

* the EXIF orientation applied;
* 16-bit ("I;16"), 32-bit integer ("I") and float ("F") images scaled to 8 bits by their nominal
  range -- 0..65535 for 16 bits; for "I" the bits per sample a TIFF header declares (0..2^31-1 for
  signed 32-bit), else 0..65535 (Pillow's "I" for 16-bit PGM and PNG files); 0..1 for float -- with
  values outside it clipped (Pillow's own conversion clips at 255 instead of scaling);
* palettes expanded; an alpha channel (or a transparent colour) composited over white;
* grayscale as Pillow's ITU-R 601 luma.

Every failure is an :class:`ImageDecodeError` naming the file (:class:`ImageTooLargeError` for a file
over a limit); a limit set to something that is not a count is an :class:`ImageLimitError`.
"""

from __future__ import annotations

import math
import os
import re
import stat
import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

from cnnlab._limits import format_bytes, size_from_env
from cnnlab.errors import CnnlabError

__all__ = ["MAX_IMAGE_PIXELS", "MAX_IMAGE_PIXELS_ENV", "MAX_IMAGE_BYTES", "MAX_IMAGE_BYTES_ENV", "ImageDecodeError",
           "ImageTooLargeError", "ImageLimitError", "max_image_pixels", "max_image_bytes", "open_image",
           "read_image"]

#: The most pixels (width x height, from the header) an image may have: 64 MP, e.g. 8000x8000.
MAX_IMAGE_PIXELS = 64_000_000
MAX_IMAGE_PIXELS_ENV = "CNNLAB_MAX_IMAGE_PIXELS"
#: The largest image file read, in bytes: 256 MiB (an uncompressed 64 MP RGB file is 192 MB).
MAX_IMAGE_BYTES = 256 * 1024**2
MAX_IMAGE_BYTES_ENV = "CNNLAB_MAX_IMAGE_BYTES"

_CHUNK = 1 << 22  # values converted at a time when scaling deep images to 8 bits


class ImageDecodeError(CnnlabError):
    """An image file is missing or cannot be decoded; the message names the file."""


class ImageTooLargeError(ImageDecodeError):
    """An image file is over the byte or the pixel limit; the message names the file, its size, the limit
    and how to raise it."""


class ImageLimitError(CnnlabError):
    """A pixel or byte limit (an argument or its environment variable) that is not a valid count."""


def _pillow_cap() -> int | None:
    """Pillow's hard limit: above twice ``PIL.Image.MAX_IMAGE_PIXELS`` ``Image.open`` refuses (None: no limit)."""
    cap = Image.MAX_IMAGE_PIXELS
    return None if cap is None else 2 * int(cap)


def _mp(pixels: float) -> str:
    return f"{pixels / 1e6:g} MP"


def max_image_pixels(value: int | None = None) -> int:
    """The pixel limit in force: ``value``, else ``$CNNLAB_MAX_IMAGE_PIXELS`` (a count, or with K, M or G:
    ``100M``, ``100MP``), else :data:`MAX_IMAGE_PIXELS`; never above Pillow's hard limit.

    Raises:
        ImageLimitError: not a positive count, or above Pillow's hard limit (2 x ``PIL.Image.MAX_IMAGE_PIXELS``).
    """
    cap = _pillow_cap()
    if value is None:
        if not os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip():
            return MAX_IMAGE_PIXELS if cap is None else min(MAX_IMAGE_PIXELS, cap)
        value = size_from_env(MAX_IMAGE_PIXELS_ENV, MAX_IMAGE_PIXELS, ImageLimitError, base=1000,
                              what="a positive pixel count, e.g. 100000000 or 100M")
        where = f"${MAX_IMAGE_PIXELS_ENV}"
    else:
        where = "max_pixels"
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ImageLimitError(f"max_pixels={value!r}: give a positive pixel count")
    if cap is not None and value > cap:
        raise ImageLimitError(f"{where}={value:,} pixels: at most {cap:,} ({_mp(cap)}, Pillow's own hard limit, "
                              "twice PIL.Image.MAX_IMAGE_PIXELS); resize larger images first")
    return value


def max_image_bytes(value: int | None = None) -> int:
    """The byte limit in force: ``value``, else ``$CNNLAB_MAX_IMAGE_BYTES`` (bytes, or with K, M, G or T:
    ``1G``), else :data:`MAX_IMAGE_BYTES`. :class:`ImageLimitError` if it is not a positive count."""
    if value is None:
        return size_from_env(MAX_IMAGE_BYTES_ENV, MAX_IMAGE_BYTES, ImageLimitError,
                             what="a positive number of bytes, or one with K, M, G or T (e.g. 1G)")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ImageLimitError(f"max_bytes={value!r}: give a positive number of bytes")
    return value


def _over_pixels(path: str | os.PathLike, size: tuple[int, int] | None, pixels: int, limit: int) -> ImageTooLargeError:
    shape = f"{size[0]}x{size[1]} pixels" if size else f"{pixels:,} pixels"
    return ImageTooLargeError(f"{path}: {shape} ({pixels / 1e6:.1f} MP) is over the limit of {_mp(limit)} "
                              f"(${MAX_IMAGE_PIXELS_ENV}); resize it first")


def _header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """The width and height in the file's header, read by Pillow's format plugins directly, as ``Image.open``
    does but without its decompression-bomb check (which refuses to say the size); None if none reads it."""
    try:
        with open(path, "rb") as fp:
            prefix = fp.read(16)
            for fmt in list(Image.ID):
                factory, accept = Image.OPEN[fmt]
                ok = not accept or accept(prefix)
                if ok and not isinstance(ok, str):  # a str is the plugin's reason it does not accept the file
                    fp.seek(0)
                    try:
                        return tuple(factory(fp, os.fspath(path)).size)  # type: ignore[return-value]
                    except Exception:  # noqa: BLE001  (not this format, or the plugin's own bomb check)
                        continue
    except OSError:
        return None
    return None


def _bomb_pixels(error: Exception) -> int:
    m = re.search(r"\((\d+) pixels\)", str(error))
    return int(m.group(1)) if m else 0


@contextmanager
def open_image(path: str | os.PathLike, *, max_pixels: int | None = None,
               max_bytes: int | None = None) -> Iterator[Image.Image]:
    """Open ``path`` lazily (nothing decoded yet) once its byte size and its header's pixel count are within
    the limits (:func:`max_image_bytes`, :func:`max_image_pixels`); the file is closed on leaving.

    Inside the ``with`` block Pillow's decompression-bomb warnings are silenced (the limit was checked),
    and any exception the block raises while decoding becomes an :class:`ImageDecodeError` naming the file.

    Raises:
        ImageDecodeError: a missing path, not a regular file, not a readable image.
        ImageTooLargeError: over the byte or the pixel limit.
        ImageLimitError: a limit that is not a valid count.
    """
    pixel_limit, byte_limit = max_image_pixels(max_pixels), max_image_bytes(max_bytes)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageDecodeError(f"{path}: no such file") from None
    except OSError as e:
        raise ImageDecodeError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):  # a folder, a FIFO, a device: reading could block or never end
        raise ImageDecodeError(f"{path}: not a regular file")
    if st.st_size > byte_limit:
        raise ImageTooLargeError(f"{path}: {format_bytes(st.st_size)} is over the limit of {format_bytes(byte_limit)} "
                                 f"for an image file (${MAX_IMAGE_BYTES_ENV}); resize or recompress it first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as e:  # over twice Pillow's limit, which is at least cnnlab's
            size = _header_size(path)
            raise _over_pixels(path, size, math.prod(size) if size else _bomb_pixels(e), pixel_limit) from None
        except FileNotFoundError:
            raise ImageDecodeError(f"{path}: no such file") from None
        # Pillow's plugins raise OSError, ValueError, SyntaxError, EOFError, struct.error, ... on damaged files
        except Exception as e:  # noqa: BLE001
            raise ImageDecodeError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
        with im:
            w, h = im.size
            if w * h > pixel_limit:
                raise _over_pixels(path, (w, h), w * h, pixel_limit)
            try:
                yield im
            except ImageDecodeError:
                raise
            except Image.DecompressionBombError as e:  # a frame or tile larger than the image (GIF, TIFF)
                raise ImageTooLargeError(f"{path}: {w}x{h} pixels, but a frame or tile inside it has "
                                         f"{_bomb_pixels(e):,} pixels, over Pillow's decompression-bomb limit; "
                                         "re-save it") from None
            except Exception as e:  # noqa: BLE001  (see above)
                raise ImageDecodeError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def read_image(path: str | os.PathLike, grayscale: bool, *, draft: tuple[int, int] | None = None,
               max_pixels: int | None = None, max_bytes: int | None = None) -> Image.Image:
    """Decode ``path`` (checked by :func:`open_image`) to an "L" (``grayscale``) or "RGB" image: EXIF orientation
    applied, deep images scaled to 8 bits, palettes expanded, alpha over white (see the module docstring).

    ``draft`` (W, H): a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps it at least that
    large (``Image.draft``); other formats decode at full size.
    """
    with open_image(path, max_pixels=max_pixels, max_bytes=max_bytes) as im:
        if draft is not None:
            im.draft(None, draft)
        top = _nominal_max(im)  # before anything drops the TIFF tags
        ImageOps.exif_transpose(im, in_place=True)  # decodes
        return _flatten(im, grayscale, top)


def _nominal_max(im: Image.Image) -> float:
    """The value a deep image's white has: 65535 for 16 bits, 1.0 for float, for 32-bit "I" what a TIFF
    header declares (bits per sample, signed or not), else 65535 (Pillow's "I" from 16-bit PGM and PNG)."""
    if im.mode == "F":
        return 1.0
    if im.mode != "I":
        return 65535.0
    tags = getattr(im, "tag_v2", None)
    if tags is not None:
        bits, fmt = tags.get(258), tags.get(339)  # BitsPerSample, SampleFormat (2: signed)
        bits = bits[0] if isinstance(bits, tuple) and bits else bits
        fmt = fmt[0] if isinstance(fmt, tuple) and fmt else fmt
        if isinstance(bits, int) and 8 < bits <= 32:
            return float(2 ** (bits - (fmt == 2)) - 1)
    return 65535.0


def _to_uint8(a: np.ndarray, top: float) -> np.ndarray:
    """``a`` (2-D) clipped to [0, top] and scaled to 0..255, rounded; a few million values at a time."""
    out = np.empty(a.shape, np.uint8)
    rows = max(1, _CHUNK // max(1, a.shape[1]))
    for r in range(0, a.shape[0], rows):
        x = a[r: r + rows].astype(np.float64)
        np.nan_to_num(x, copy=False, nan=0.0)
        np.clip(x, 0.0, top, out=x)
        x *= 255.0 / top
        out[r: r + rows] = np.rint(x, out=x)
    return out


def _flatten(im: Image.Image, grayscale: bool, top: float) -> Image.Image:
    """``im`` as "L" or "RGB": deep images scaled by ``top`` (their white), palettes expanded, alpha over white."""
    if im.mode.startswith("I") or im.mode == "F":  # "I", "I;16", "I;16B", ...: Pillow's "L" clips at 255
        im = Image.fromarray(_to_uint8(np.asarray(im), top))
    elif im.mode in ("P", "PA"):
        im = im.convert("RGBA")  # honours a palette's transparent entry
    if im.mode in ("RGBA", "LA", "RGBa", "La") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
    return im.convert("L" if grayscale else "RGB")
