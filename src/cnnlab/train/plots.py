"""Plots for a person: training curves and the confusion matrix (matplotlib figures, no pyplot state)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from cnnlab._plot import new_figure, save_figure

__all__ = ["plot_curves", "plot_confusion"]


def _save(fig, path: str | os.PathLike) -> None:
    save_figure(fig, path, dpi=110, bbox_inches="tight")


def plot_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> None:
    """Loss and accuracy per epoch, train and validation."""
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = new_figure(1, 2, figsize=(10, 3.8))
    # training numbers are running averages with dropout, augmentation and label smoothing active
    for key, label in (("train_loss", "train (running, regularised)"), ("val_loss", "validation")):
        vals = [r.get(key) for r in history]
        if any(v is not None for v in vals):
            ax1.plot(epochs, vals, marker="o", ms=3, label=label)
    for key, label in (("train_acc", "train (running, regularised)"), ("val_acc", "validation")):
        vals = [r.get(key) for r in history]
        if any(v is not None for v in vals):
            ax2.plot(epochs, [100 * v if v is not None else None for v in vals], marker="o", ms=3, label=label)
    ax1.set(xlabel="epoch", ylabel="loss", title="loss")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)


def plot_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | os.PathLike,
                   title: str = "") -> None:
    """Confusion matrix (rows: true class, columns: predicted), counts and row-normalised colour."""
    m = np.asarray(matrix, dtype=np.int64)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    fig, ax = new_figure(figsize=(1.0 + 0.65 * n, 0.8 + 0.6 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    _save(fig, path)
