"""``load_run``: a run directory of any kind (trained, transferred, compressed) back to its model.

It sits above ``train`` and ``compress``: a compressed run is rebuilt by its method's code
(:func:`cnnlab.compress.run.load_compressed`), a trained one by :func:`cnnlab.train.load_run`. The commands
that take any run (``eval``, ``predict``, ``viz``, ``compare``) load it through here; ``train`` (resume,
transfer) and ``compress`` (its float source) take float runs only and use ``train.load_run``.
"""

from __future__ import annotations

import os

from cnnlab.compress.run import load_compressed
from cnnlab.train.rundir import LoadedRun
from cnnlab.train.rundir import load_run as _load_run

__all__ = ["load_run", "LoadedRun"]


def load_run(path: str | os.PathLike, *, weights: str = "final", map_location: str = "cpu") -> LoadedRun:
    """Rebuild any run's model (see :func:`cnnlab.train.load_run`; compressed runs from ``model.cnnz``)."""
    return _load_run(path, weights=weights, map_location=map_location, compressed=load_compressed)
