"""Animate a traced 2D operation in the style of the convolution-arithmetic figures.

:func:`animate` draws a :class:`~cnnlab.ops.steps.Trace` the way Dumoulin & Visin, "A guide to
convolution arithmetic for deep learning" (2016, arXiv:1603.07285) do: on the left the padded input
as a grid of cells (input light blue, padding light grey with dashed outlines), the window of the
current step dark blue with each kernel weight as a small subscript in the lower right of the cell it
multiplies; on the right the output grid filling in step by step. A title names the operation and its
parameters and a caption gives the current step's formula. There is one frame per output position
and a final frame with the complete output, written as an animated GIF or as numbered PNG files.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from cnnlab._io import atomic_path
from cnnlab._plot import figure
from cnnlab.errors import CnnlabError
from cnnlab.ops.limits import check_memory, memory_limit
from cnnlab.ops.steps import Trace, format_number

__all__ = ["animate", "animation_bytes", "AnimationPathError", "SUFFIXES", "PIXEL_BYTES", "CELL_BYTES",
           "WINDOW_CELL_BYTES"]

SUFFIXES = (".gif", ".png")
_NAMES = {"correlate": "correlation", "convolve": "convolution (kernel flipped)",
          "max": "max pooling", "avg": "average pooling"}
_INPUT, _PAD, _WINDOW, _WINDOW_PAD = "#a6cee3", "#f2f2f2", "#1f4e79", "#6f8fb3"
_OUT_EMPTY, _OUT_DONE, _OUT_NOW = "#ffffff", "#99d8c9", "#1b7f6e"
_COLORS = (_INPUT, _PAD, _WINDOW, _WINDOW_PAD, _OUT_EMPTY, _OUT_DONE, _OUT_NOW, "#000000", "#777777")
_TITLE_PT, _CAPTION_PT, _MIN_PT, _TOP_IN, _SIDE_IN = 12.0, 10.0, 7.0, 1.1, 0.2
_EM, _TITLE_EM = 0.6, 0.5  # glyph widths in ems (digits and monospace; proportional text)


class AnimationPathError(CnnlabError):
    """The animation cannot be written where asked; the message names the path and why."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: cannot write there ({reason})")


def animate(trace: Trace, path, *, fps: float = 1.5, dpi: int = 100, max_bytes: int | None = None) -> list[Path]:
    """Draw ``trace`` frame by frame and write it to ``path``; return the paths written.

    ``path`` ending in ``.gif`` gives one animated GIF (``fps`` frames per second, looping);
    ``.png`` gives numbered frames ``<stem>_000.png``, ``<stem>_001.png``, ... beside it.

    Before anything is drawn, the folder is checked by creating (and removing) a file in it, and the
    memory is estimated (:func:`animation_bytes`; over ``max_bytes``, ``$CNNLAB_CONV_MEMORY`` or 1 GiB:
    :class:`~cnnlab.ops.limits.MemoryLimitError`). The files are written atomically, the PNG frames
    as a set: a failure leaves no new file (:class:`AnimationPathError` when writing failed).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"cannot write an animation to {str(path)!r}: the name must end in "
                         f"{' or '.join(SUFFIXES)} (an animated GIF or numbered PNG frames)")
    if not fps > 0:
        raise ValueError(f"fps must be positive; got {fps!r}")
    if isinstance(dpi, bool) or not isinstance(dpi, (int, np.integer)) or dpi < 1:
        raise ValueError(f"dpi must be a positive integer; got {dpi!r}")
    gif = suffix == ".gif"
    _check_animation_memory(trace, dpi, gif, max_bytes)
    _check_writable(path)
    try:
        return _write(trace, path, fps, dpi, gif)
    except OSError as e:
        raise AnimationPathError(path, e.strerror or str(e)) from None


#: Bytes per pixel of one frame while it is drawn: Agg's RGBA canvas and the saved background
#: (4 each), the RGB frame (3), its palette image and PIL's copies. Measured (peak RSS, one frame
#: of 0.3 to 20 megapixels): 15 bytes.
PIXEL_BYTES = 16
#: Bytes per cell of the input and output grids (a Rectangle and a Text) and per cell of the
#: window (a Rectangle and two Texts). Measured (peak RSS, 900 to 10000 cells): about 16 and 32 KiB.
CELL_BYTES, WINDOW_CELL_BYTES = 16 << 10, 32 << 10


def animation_bytes(trace: Trace, dpi: int = 100, gif: bool = True, widest: int | None = None) -> int:
    """The bytes :func:`animate` takes for ``trace``: the figure's artists (:data:`CELL_BYTES` per grid
    cell, :data:`WINDOW_CELL_BYTES` per window cell), one frame being drawn (:data:`PIXEL_BYTES` per
    pixel) and, for a GIF, every frame at 1 byte per pixel (Pillow keeps them all until it writes
    the file). ``widest``: the most characters a value takes (it sets the cell size; default: counted).
    """
    if widest is None:
        finite = trace.padded[np.isfinite(trace.padded)]
        widest = max((len(format_number(v)) for v in np.unique(np.concatenate([finite, trace.output.ravel()]))),
                     default=1)
    _, _, width_in, height_in = _layout(trace, widest)
    pixels = round(width_in * dpi) * round(height_in * dpi)
    cells = trace.padded.size + trace.output.size
    kh, kw = trace.kernel_size
    frames = len(trace.steps) + 1
    return cells * CELL_BYTES + kh * kw * WINDOW_CELL_BYTES + pixels * PIXEL_BYTES + (frames * pixels if gif else 0)


def _check_animation_memory(trace: Trace, dpi: int, gif: bool, max_bytes: int | None) -> None:
    """Refuse an animation over the limit; a first bound with the smallest cells is free to compute."""
    limit = memory_limit(max_bytes)
    for widest in (1, None):
        needed = animation_bytes(trace, dpi, gif, widest)
        if needed > limit:
            oh, ow = trace.output.shape
            what = (f"animation: {len(trace.steps) + 1} frames ({oh}x{ow} output positions), input "
                    f"{trace.input.shape[0]}x{trace.input.shape[1]}" + (", as one GIF," if gif else ","))
            advice = ("use a smaller input or a larger stride" +
                      (", or write PNG frames (a .png path), which are kept one at a time" if gif else ""))
            check_memory(needed, what, advice, max_bytes)


def _check_writable(path: Path) -> None:
    """Raise :class:`AnimationPathError` unless a file can be created where ``path`` goes."""
    folder = path.parent
    try:
        if path.is_dir():
            raise AnimationPathError(path, "it is a folder")
        while not folder.exists():  # atomic_path creates the missing folders
            folder = folder.parent
        if not folder.is_dir():
            raise AnimationPathError(path, f"{folder} is a file, not a folder")
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or str(e)
        if e.errno == errno.ENOENT:  # an existing folder that takes no files, e.g. /proc
            reason = f"{folder} does not take new files"
        raise AnimationPathError(path, reason) from None


def _write(trace: Trace, path: Path, fps: float, dpi: int, gif: bool) -> list[Path]:
    frames = _frames(trace, dpi)
    if gif:
        first = next(frames)
        swatch = np.repeat(np.array([list(bytes.fromhex(c[1:])) for c in _COLORS], np.uint8), 4096, axis=0)
        palette = Image.fromarray(np.concatenate([first.reshape(-1, 3), swatch])[None]).quantize(256)
        images = (Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames)
        with atomic_path(path) as tmp:
            Image.fromarray(first).quantize(palette=palette, dither=Image.Dither.NONE).save(
                tmp, format="GIF", save_all=True, append_images=images, duration=int(1000 / fps), loop=0)
        return [path]
    digits = max(3, len(str(len(trace.steps))))
    written = []
    with ExitStack() as stack:  # every frame goes to a temporary file; all are renamed at the end, or none
        for n, frame in enumerate(frames):
            target = path.with_name(f"{path.stem}_{n:0{digits}d}.png")
            Image.fromarray(frame).save(stack.enter_context(atomic_path(target)), format="PNG")
            written.append(target)
    return written


def _pair(v) -> str:
    return str(v[0]) if v[0] == v[1] else f"({v[0]}, {v[1]})"


def _title(trace: Trace) -> str:
    """E.g. ``correlation, 3x3 kernel, stride 1, padding 0, dilation 1``."""
    (t, b), (l, r) = trace.pads
    padding = _pair((t, l)) if (t, l) == (b, r) else f"(top {t}, bottom {b}, left {l}, right {r})"
    if trace.op in ("correlate", "convolve") and trace.padding_mode != "zeros" and t + b + l + r:
        padding += f" ({trace.padding_mode})"
    kh, kw = trace.kernel_size
    size = f"{kh}x{kw} {'kernel' if trace.kernel is not None else 'window'}"
    return (f"{_NAMES[trace.op]}, {size}, stride {_pair(trace.stride)}, padding {padding}, "
            f"dilation {_pair(trace.dilation)}")


def _shorten(text: str, limit: int) -> str:
    """Cut the middle of a long formula, keeping its result: ``3*0 + 3*1 + ... = 12``."""
    if len(text) <= limit:
        return text
    head, sep, tail = text.rpartition(" = ")
    tail = sep + tail if sep else ""
    return (head if sep else text)[:max(limit - len(tail) - 4, 8)].rstrip(" +,") + " ..." + tail


def _layout(trace: Trace, widest: int) -> tuple[float, float, float, float]:
    """(gap between the grids in cells, cell size, figure width, figure height), sizes in inches;
    ``widest``: the most characters a cell's value takes."""
    hp, wp = trace.padded.shape
    oh, ow = trace.output.shape
    gap = 1.5
    cells_w, cells_h = wp + gap + ow, max(hp, oh)
    smallest = float(np.clip(widest * _EM * _MIN_PT / (0.9 * 72), 0.3, 0.6))
    cell_in = float(np.clip(min(9.0 / cells_w, 7.0 / cells_h), smallest, 0.6))
    width_in = max(cells_w * cell_in + 2 * _SIDE_IN, 6.0)
    height_in = cells_h * cell_in + _TOP_IN + _SIDE_IN
    return gap, cell_in, width_in, height_in


def _frames(trace: Trace, dpi: int) -> Iterator[np.ndarray]:
    """Yield the frames as (H, W, 3) uint8 arrays: one per step, then the complete output.

    The static parts (grids, values, title) are drawn once; each frame restores them and draws only
    the window, the current output cell and the caption, so large inputs stay fast.
    """
    from matplotlib.patches import Rectangle  # matplotlib, as in _plot.figure: imported on the first frame

    hp, wp = trace.padded.shape
    oh, ow = trace.output.shape
    is_pad, finite = trace.is_padding, np.isfinite(trace.padded)
    labels = np.array([format_number(v) if f else "" for v, f in zip(trace.padded.flat, finite.flat)],
                      dtype=object).reshape(hp, wp)
    widest = max(len(s) for s in [*labels.flat, *map(format_number, trace.output.flat)])
    widest_weight = 1 if trace.kernel is None else max(len(format_number(w)) for w in trace.kernel.flat)
    gap, cell_in, width_in, height_in = _layout(trace, widest)
    cells_w, cells_h = wp + gap + ow, max(hp, oh)
    cell_pt = cell_in * 72
    value_pt = min(0.36 * cell_pt, 0.9 * cell_pt / (_EM * widest))
    weight_pt = min(0.2 * cell_pt, 0.45 * cell_pt / (_EM * widest_weight))
    text_in = width_in - 2 * _SIDE_IN

    fig = figure(figsize=(width_in, height_in), dpi=dpi)
    canvas = fig.canvas
    ax = fig.add_axes((0, _SIDE_IN / height_in, 1, cells_h * cell_in / height_in))
    ax.set_axis_off()
    extra = (width_in / cell_in - cells_w) / 2
    ax.set_xlim(-extra, cells_w + extra)
    ax.set_ylim(cells_h, 0)
    x_out, y_in, y_out = wp + gap, (cells_h - hp) / 2, (cells_h - oh) / 2

    def cell(x: float, y: float, color: str, dashed: bool = False, animated: bool = False) -> Rectangle:
        return ax.add_patch(Rectangle((x, y), 1, 1, facecolor=color, edgecolor="#555555", clip_on=False,
                                      linewidth=0.5 if dashed else 1.0, linestyle="--" if dashed else "-",
                                      animated=animated))

    def text(x: float, y: float, s: str = "", **kw):
        return ax.text(x, y, s, **{"ha": "center", "va": "center", "fontsize": value_pt, "clip_on": False, **kw})

    for r, c in np.ndindex(hp, wp):
        cell(c, y_in + r, _PAD if is_pad[r, c] else _INPUT, dashed=is_pad[r, c])
        text(c + 0.5, y_in + r + 0.5, labels[r, c], color="#777777" if is_pad[r, c] else "black")
    for i, j in np.ndindex(oh, ow):
        cell(x_out + j, y_out + i, _OUT_EMPTY)
    panel_pt = min(9.0, 0.8 * cell_pt)
    ax.text(wp / 2, y_in - 0.15, "input" + (" (padded)" if is_pad.any() else ""), ha="center", va="bottom",
            fontsize=panel_pt)
    ax.text(x_out + ow / 2, y_out - 0.15, "output", ha="center", va="bottom", fontsize=panel_pt)
    title = _title(trace)
    fig.text(0.5, 1 - 0.2 / height_in, title, ha="center", va="top",
             fontsize=min(_TITLE_PT, text_in * 72 / (_TITLE_EM * len(title))))
    caption = fig.text(0.5, 1 - 0.55 / height_in, "", ha="center", va="top", fontsize=_CAPTION_PT,
                       family="monospace", animated=True)
    caption_chars = int(text_in * 72 / (_EM * _CAPTION_PT))
    kh, kw = trace.kernel_size
    window = [(cell(0, 0, _WINDOW, animated=True), text(0, 0, color="white", animated=True),
               text(0, 0, ha="right", va="bottom", fontsize=weight_pt, color="white", animated=True))
              for _ in range(kh * kw)]
    out_cell, out_text = cell(0, 0, _OUT_NOW, animated=True), text(0, 0, animated=True)
    try:
        canvas.draw()
        background = canvas.copy_from_bbox(fig.bbox)
        for step in trace.steps:
            canvas.restore_region(background)
            for k, (r, c) in enumerate((r, c) for r in step.rows for c in step.cols):
                patch, value, weight = window[k]
                patch.set(xy=(c, y_in + r), facecolor=_WINDOW_PAD if is_pad[r, c] else _WINDOW,
                          linestyle="--" if is_pad[r, c] else "-")
                value.set(x=c + 0.5, y=y_in + r + 0.5, text=labels[r, c])
                weight.set(x=c + 0.95, y=y_in + r + 0.97,
                           text="" if step.weights is None else format_number(step.weights.flat[k]))
                for a in window[k]:
                    ax.draw_artist(a)
            i, j = step.index
            out_cell.set(xy=(x_out + j, y_out + i), facecolor=_OUT_NOW)
            out_text.set(x=x_out + j + 0.5, y=y_out + i + 0.5, text=format_number(step.result), color="white")
            caption.set_text(_shorten(step.formula(trace.op), caption_chars))
            for a in (out_cell, out_text, caption):
                a.draw(canvas.get_renderer())
            yield np.asarray(canvas.buffer_rgba())[..., :3].copy()
            canvas.restore_region(background)
            out_cell.set_facecolor(_OUT_DONE)
            out_text.set_color("black")
            ax.draw_artist(out_cell)
            ax.draw_artist(out_text)
            background = canvas.copy_from_bbox(fig.bbox)
        caption.set_text(f"complete output: {oh}x{ow}")
        caption.draw(canvas.get_renderer())
        yield np.asarray(canvas.buffer_rgba())[..., :3].copy()
    finally:
        fig.clear()
