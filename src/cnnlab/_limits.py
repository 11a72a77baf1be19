"""Size limits on untrusted input: read from an environment variable or a default, and shown in messages.

Only the standard library (every package may use it, ``ops`` included).
"""

from __future__ import annotations

import os
import re

from cnnlab.errors import CnnlabError

__all__ = ["parse_size", "size_from_env", "format_bytes"]

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)\s*(?:i?b|p|px|pixels)?")


def parse_size(raw: str, *, base: int = 1024) -> int | None:
    """``"512M"`` -> 536870912 (``base`` 1024; 1000 for counts such as pixels: ``"100M"`` -> 100000000), a
    plain number as itself; None if ``raw`` is not a positive size."""
    m = _SIZE.fullmatch(raw.strip().lower())
    if not m:
        return None
    value = int(float(m.group(1)) * base ** "_kmgt".index(m.group(2) or "_"))
    return value if value > 0 else None


def size_from_env(env: str, default: int, error: type[CnnlabError] = CnnlabError, *, base: int = 1024,
                  what: str = "a positive number of bytes, or a number with K, M, G or T (e.g. 512M)") -> int:
    """``$env`` as a size (:func:`parse_size`) when set, else ``default``; a value that is not a positive size
    raises ``error`` naming the variable and ``what`` would be valid."""
    raw = os.environ.get(env, "").strip()
    if not raw:
        return default
    value = parse_size(raw, base=base)
    if value is None:
        raise error(f"${env}={raw!r}: give {what}")
    return value


def format_bytes(n: float) -> str:
    """``n`` bytes as a message shows them, to 3 digits: ``512 bytes``, ``1.50 KiB``, ``24.1 GiB``, ``256 MiB``."""
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        n /= 1024
        if n < 1024 or unit == "EiB":
            return f"{n:.{2 if n < 10 else 1 if n < 100 else 0}f} {unit}"
    raise AssertionError("unreachable")
