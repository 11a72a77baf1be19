"""Train a run, or reuse it when it is finished, or resume it when it is not: what the commands that
train several models in a row (``experiment``, ``compare``) need, so that running them again costs
nothing and a killed run continues where it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from cnnlab.train.config import TrainConfig
from cnnlab.train.engine import fit
from cnnlab.train.rundir import RunDir

__all__ = ["fit_or_reuse"]


def fit_or_reuse(cfg: TrainConfig, path: str | Path, *, overwrite: bool = False,
                 log: Callable[[str], None] = print, progress: bool | None = None) -> tuple[dict[str, Any], str]:
    """Return ``(metrics, how)`` for ``cfg`` trained into ``path``; ``how`` is ``"reused"`` (a finished
    run is there: ``metrics.json`` marks it complete), ``"resumed"`` (a checkpoint is there) or
    ``"trained"``. ``overwrite`` trains again from scratch.

    The existing run's settings are not compared with ``cfg``: a caller that may meet a run made with
    another recipe checks ``config.json`` first (as :func:`cnnlab.compare.compare_models` does).
    """
    path = Path(path)
    run = RunDir(path)
    if not overwrite and run.metrics.is_file():
        log(f"{cfg.model}: reusing the finished run in {path} (pass --overwrite to train again)")
        return run.read_json("metrics.json"), "reused"
    if not overwrite and run.checkpoint.is_file():
        log(f"{cfg.model}: resuming the unfinished run in {path}")
        return fit(resume=path, log=log, progress=progress), "resumed"
    # a folder killed before its first checkpoint is started again by fit (RunDir.claim)
    log(f"{cfg.model}: training into {path} ({cfg.epochs} epochs)")
    return fit(cfg, path, overwrite=overwrite, log=log, progress=progress), "trained"
