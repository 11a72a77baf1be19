"""Reading a small matrix from the command line: a string like ``"3 3 2; 0 1 2"`` or a .npy/.csv file."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

__all__ = ["parse_matrix", "load_matrix", "format_matrix"]


def parse_matrix(text: str, name: str = "matrix") -> np.ndarray:
    """Rows separated by ``;`` or newlines, values by spaces or commas: ``"3 3 2; 0 1 2"`` -> 2x3."""
    rows = [r for r in re.split(r"[;\n]", text) if r.strip()]
    if not rows:
        raise ValueError(f"{name} is empty; give rows separated by ';' and values by spaces, e.g. \"1 2; 3 4\"")
    parsed = []
    for i, row in enumerate(rows):
        try:
            parsed.append([float(v) for v in re.split(r"[\s,]+", row.strip())])
        except ValueError:
            raise ValueError(f"{name} row {i + 1} ({row.strip()!r}) has a value that is not a number") from None
    widths = {len(r) for r in parsed}
    if len(widths) != 1:
        lengths = ", ".join(str(len(r)) for r in parsed)
        raise ValueError(f"{name} is ragged: its rows have {lengths} values; every row needs the same number")
    return np.array(parsed)


def load_matrix(arg: str, name: str = "matrix") -> np.ndarray:
    """``arg`` as a path to a .npy or .csv file when it names one, else as a matrix string."""
    path = Path(arg)
    if path.suffix.lower() in (".npy", ".csv"):
        if not path.is_file():
            raise ValueError(f"{name} file {arg!r} does not exist")
        try:
            if path.suffix.lower() == ".npy":
                a = np.load(path, allow_pickle=False)
            else:
                a = np.loadtxt(path, delimiter=",", ndmin=2)
        except (ValueError, OSError) as e:
            raise ValueError(f"{name} file {arg!r} could not be read as a numeric matrix ({e})") from None
        a = np.asarray(a)
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"{name} file {arg!r} must hold a 2D numeric matrix; got shape {a.shape}, "
                             f"dtype {a.dtype}")
        return a.astype(np.float64)
    return parse_matrix(arg, name)


def format_matrix(a: np.ndarray) -> str:
    """Right-aligned columns; whole numbers without decimals."""
    from cnnlab.ops.steps import format_number

    cells = [[format_number(v) for v in row] for row in np.atleast_2d(a)]
    width = max((len(c) for row in cells for c in row), default=1)
    return "\n".join(" ".join(c.rjust(width) for c in row) for row in cells)
