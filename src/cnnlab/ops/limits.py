"""Memory limits for the step-by-step ops: the memory a request would take is estimated from its
shapes alone, and a request over the limit is refused before anything is allocated.

:func:`~cnnlab.ops.steps.trace2d` keeps one Python record per output position, so its memory grows
with the output (about 0.8 kB per position for a 3x3 correlation, the reference op's arrays
included); an animated GIF keeps every frame; a matrix file is read whole. The limit is
:data:`MEMORY_LIMIT` (1 GiB: the lecture's examples need under 1 MiB, a 100x100 input with a 3x3
kernel about 8 MiB; a 3x3 correlation passes up to about 1100x1100, with ``--json`` about 450x450),
or ``$CNNLAB_CONV_MEMORY`` (bytes, or a number with a K, M, G or T suffix, powers of 1024), or an
explicit ``max_bytes``.
"""

from __future__ import annotations

import numbers
import os

from cnnlab._limits import format_bytes, size_from_env
from cnnlab.errors import CnnlabError

__all__ = ["MEMORY_LIMIT", "MEMORY_ENV", "STEP_BYTES", "JSON_STEP_BYTES", "JSON_VALUE_BYTES", "MemoryLimitError",
           "memory_limit", "limit_source", "format_bytes", "trace_bytes", "check_memory"]

#: The default limit, in bytes.
MEMORY_LIMIT = 1 << 30
MEMORY_ENV = "CNNLAB_CONV_MEMORY"

#: Bytes of one :class:`~cnnlab.ops.steps.Step` besides its arrays' data: the Step object and its
#: attribute dict, the index tuple, the result float (and average pooling's divisor), the three
#: ndarray objects (rows, cols, values) and the list slot; the kernel is shared. Measured with
#: tracemalloc on 200x200 traces (CPython 3.11, NumPy 2.4) as the trace's memory less its arrays,
#: per step, less 8 bytes per row, column and value: 568 to 577 bytes for correlation (1x1 to 5x5
#: kernels) and max pooling, 601 for average pooling.
STEP_BYTES = 600
#: Bytes per output position of ``Trace.to_dict`` and its JSON text (``cnnlab conv --json``) besides
#: the numbers (the step's dict, its lists, its formula), and bytes per number (a float in a list
#: and its characters). Fitted to the tracemalloc peak of ``json.dumps(trace.to_dict())`` on the
#: same 200x200 traces: the estimate is 0.93 to 1.45 times the peak.
JSON_STEP_BYTES = 1200
JSON_VALUE_BYTES = 80


class MemoryLimitError(CnnlabError):
    """A request whose estimated memory is over the limit; the message gives both and the way out."""


def memory_limit(max_bytes: int | None = None) -> int:
    """The limit in bytes: ``max_bytes`` when given, else ``$CNNLAB_CONV_MEMORY``, else
    :data:`MEMORY_LIMIT`. A value that is not a positive size raises :class:`MemoryLimitError`."""
    if max_bytes is not None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral) or max_bytes < 1:
            raise MemoryLimitError(f"max_bytes must be a positive number of bytes; got {max_bytes!r}")
        return int(max_bytes)
    return size_from_env(MEMORY_ENV, MEMORY_LIMIT, MemoryLimitError,
                         what="a positive number of bytes, or a number with K, M, G or T (e.g. 2G)")


def limit_source(max_bytes: int | None = None) -> str:
    """The limit's origin as a message names it, and how to change it."""
    if max_bytes is not None:
        return "from max_bytes"
    if os.environ.get(MEMORY_ENV, "").strip():
        return f"from ${MEMORY_ENV}"
    return f"${MEMORY_ENV} raises it"


def trace_bytes(input_shape, padded_shape, output_shape, window, *, weights: bool, itemsize: int = 8,
                as_json: bool = False) -> int:
    """The bytes :func:`~cnnlab.ops.steps.trace2d` takes for these shapes (1.15 to 1.35 times the
    tracemalloc peak measured for correlation and pooling on 200x200 inputs).

    The reference op's padded input, its window matrix (im2col for correlation, the windows' copy
    for pooling, ``positions * kH * kW`` numbers), its output and one temporary of the output's size;
    the trace's own padded copy; one :data:`STEP_BYTES` record per output position with its rows,
    columns and values (8 bytes each). ``weights``: each step also refers to the kernel (shared, so
    free). ``as_json``: also ``Trace.to_dict`` and its JSON text (``cnnlab conv --json``), with the
    products and weights per step when ``weights``.
    """
    (h, w), (hp, wp), (oh, ow), (kh, kw) = input_shape, padded_shape, output_shape, window
    positions, k = max(oh, 0) * max(ow, 0), kh * kw
    arrays = 2 * hp * wp * 8 + positions * k * itemsize + 2 * positions * itemsize
    steps = positions * (STEP_BYTES + 8 * (kh + kw) + itemsize * k)
    total = arrays + steps
    if as_json:
        numbers = h * w + 2 * hp * wp + 2 * positions + positions * (kh + kw + k * (3 if weights else 1))
        total += positions * JSON_STEP_BYTES + numbers * JSON_VALUE_BYTES
    return int(total)


def check_memory(needed: int, what: str, advice: str, max_bytes: int | None = None) -> None:
    """Raise :class:`MemoryLimitError` when ``needed`` bytes are over the limit; the message reads
    ``<what> would need about <needed> (limit <limit>; <source>); <advice>``."""
    limit = memory_limit(max_bytes)
    if needed > limit:
        raise MemoryLimitError(f"{what} would need about {format_bytes(needed)} (limit {format_bytes(limit)}; "
                               f"{limit_source(max_bytes)}); {advice}")
