"""Figures without pyplot: a ``matplotlib.figure.Figure`` on an Agg canvas, saved atomically. Nothing here touches
pyplot's state or the backend, so importing cnnlab in a notebook leaves its plotting as it was."""

from __future__ import annotations

import os
from typing import Any

from cnnlab._io import atomic_path

__all__ = ["figure", "new_figure", "save_figure"]


def figure(*, figsize: tuple[float, float], dpi: float | None = None):
    """A ``matplotlib.figure.Figure`` on its own Agg canvas (``fig.canvas``); no pyplot, no backend switch.

    matplotlib is imported here, on the first figure: it takes about as long to import as the rest of
    cnnlab, and training, evaluation and the CLI's parsing draw nothing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], **subplot_kw: Any):
    """``(figure, axes)`` like ``plt.subplots`` (one ``Axes`` for 1x1, else an array), on its own Agg canvas."""
    fig = figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplot_kw)


def save_figure(fig, path: str | os.PathLike, **savefig_kw: Any) -> None:
    """Write ``fig`` as a PNG at ``path`` (temporary file + rename) and free it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **savefig_kw)
    fig.clear()
