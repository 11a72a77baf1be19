"""Reading a small matrix from the command line: a string like ``"3 3 2; 0 1 2"`` or a .npy/.csv file
(checked before it is read: see :func:`load_matrix`)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.ops._args import OpArgumentError
from cnnlab.ops.limits import check_memory, memory_limit
from cnnlab.ops.steps import format_number

__all__ = ["MatrixFileError", "parse_matrix", "load_matrix", "format_matrix"]


def parse_matrix(text: str, name: str = "matrix") -> np.ndarray:
    """Rows separated by ``;`` or newlines, values by spaces or commas: ``"3 3 2; 0 1 2"`` -> 2x3."""
    rows = [r for r in re.split(r"[;\n]", text) if r.strip()]
    if not rows:
        raise OpArgumentError(f"{name} is empty; give rows separated by ';' and values by spaces, e.g. \"1 2; 3 4\"")
    parsed = []
    for i, row in enumerate(rows):
        try:
            parsed.append([float(v) for v in re.split(r"[\s,]+", row.strip())])
        except ValueError:
            raise OpArgumentError(f"{name} row {i + 1} ({row.strip()!r}) has a value that is not a number") from None
    widths = {len(r) for r in parsed}
    if len(widths) != 1:
        lengths = ", ".join(str(len(r)) for r in parsed)
        raise OpArgumentError(f"{name} is ragged: its rows have {lengths} values; every row needs the same number")
    return np.array(parsed)


class MatrixFileError(CnnlabError):
    """A matrix file that does not exist, cannot be read as a numeric matrix, or is too large."""


def load_matrix(arg: str, name: str = "matrix", *, max_bytes: int | None = None) -> np.ndarray:
    """``arg`` as a path to a .npy or .csv file when it names one, else as a matrix string.

    A file is checked before its values are read: a .npy file's header must describe a 1D (one row)
    or 2D array of booleans, integers or floats (never Python objects: nothing is unpickled) that
    the file holds in full; a .csv file's values are bounded by its size (two characters each) or,
    when that allows too many, by its commas and newlines. Loading takes the values twice (as read
    and as float64) and any trace of the matrix at least two float64 copies, so a matrix over
    ``limit / 16`` values is refused (:class:`~cnnlab.ops.limits.MemoryLimitError`; ``max_bytes``,
    ``$CNNLAB_CONV_MEMORY`` or 1 GiB: 8192x8192). Returns a float64 (rows, cols) array.
    """
    path = Path(arg)
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".csv"):
        return parse_matrix(arg, name)
    if not path.exists():
        raise MatrixFileError(f"{name} file {arg!r} does not exist")
    if not path.is_file():
        raise MatrixFileError(f"{name} file {arg!r} is not a regular file")
    try:
        if suffix == ".npy":
            a = _load_npy(path, arg, name, max_bytes)
        else:
            a = _load_csv(path, arg, name, max_bytes)
    except OSError as e:
        raise MatrixFileError(f"{name} file {arg!r} could not be read ({e.strerror or e})") from None
    return a[None] if a.ndim == 1 else a


def _check_values(n: int, itemsize: int, what: str, max_bytes: int | None) -> None:
    check_memory(n * max(16, itemsize + 8), what, "use a smaller matrix", max_bytes)


def _load_npy(path: Path, arg: str, name: str, max_bytes: int | None) -> np.ndarray:
    fmt = np.lib.format
    with open(path, "rb") as f:
        try:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version[0]}.{version[1]}")
        except ValueError as e:
            raise MatrixFileError(f"{name} file {arg!r} could not be read as a .npy array ({e})") from None
        offset = f.tell()
    if dtype.hasobject:
        raise MatrixFileError(f"{name} file {arg!r} could not be read: it holds Python objects (dtype {dtype}), "
                              f"which are never unpickled; save a numeric array")
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise MatrixFileError(f"{name} file {arg!r} must hold numbers (booleans, integers or floats); got "
                              f"dtype {dtype}")
    if len(shape) not in (1, 2) or 0 in shape:
        raise MatrixFileError(f"{name} file {arg!r} must hold a non-empty 2D matrix (or one row); got shape "
                              f"{shape}")
    n = int(np.prod(shape, dtype=object))
    _check_values(n, dtype.itemsize, f"{name} file {arg!r} (a {'x'.join(map(str, shape))} {dtype} array)",
                  max_bytes)
    size, needed = path.stat().st_size, offset + n * dtype.itemsize
    if size < needed:
        raise MatrixFileError(f"{name} file {arg!r} is truncated: its header describes {needed - offset} bytes "
                              f"of values, the file holds {max(size - offset, 0)}")
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise MatrixFileError(f"{name} file {arg!r} could not be read as a numeric matrix ({e})") from None
    return a.astype(np.float64, copy=False)


def _load_csv(path: Path, arg: str, name: str, max_bytes: int | None) -> np.ndarray:
    # every value ends at a comma, a newline or the end of the file, so these count at most one more
    n = path.stat().st_size // 2 + 1  # each value takes at least two characters
    if n * 16 > memory_limit(max_bytes):
        n = 1
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                n += chunk.count(b",") + chunk.count(b"\n")
        _check_values(n, 8, f"{name} file {arg!r} (up to {n} values)", max_bytes)
    try:
        with warnings.catch_warnings():  # an empty file: said below, in one line
            warnings.simplefilter("ignore", UserWarning)
            a = np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError as e:
        raise MatrixFileError(f"{name} file {arg!r} could not be read as a numeric matrix ({e})") from None
    if a.size == 0:
        raise MatrixFileError(f"{name} file {arg!r} holds no values; give rows of comma-separated numbers")
    return a


def format_matrix(a: np.ndarray) -> str:
    """Right-aligned columns; whole numbers without decimals."""
    cells = [[format_number(v) for v in row] for row in np.atleast_2d(a)]
    width = max((len(c) for row in cells for c in row), default=1)
    return "\n".join(" ".join(c.rjust(width) for c in row) for row in cells)
