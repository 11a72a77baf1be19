"""Train a run, or reuse it when it is finished, or resume it when it is not: what the commands that
train several models in a row (``experiment``, ``compare``) need, so that running them again costs
nothing and a killed run continues where it stopped. A run made with another recipe is never reused:
its numbers would not answer the request."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from cnnlab.train.config import DEFAULT_BATCH_SIZE, TrainConfig
from cnnlab.train.engine import fit
from cnnlab.train.rundir import RunDir, RunError

__all__ = ["fit_or_reuse", "recipe_differences", "check_reusable", "RecipeMismatchError", "RECIPE_NEUTRAL"]

#: Settings that do not change what a run computes: a finished run differing only in them is reused (``recipe``
#: names where the settings came from; the settings themselves are compared).
RECIPE_NEUTRAL = frozenset({"device", "data_dir", "checkpoint_interval", "eval_batch_size", "recipe"})


class RecipeMismatchError(RunError):
    """A finished or unfinished run in the folder was made with another recipe."""


def recipe_differences(saved: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """``"epochs 20 there, 1 here"`` for every setting of ``want`` (outside :data:`RECIPE_NEUTRAL`) that a
    run's saved ``config.json["train"]`` has otherwise. A setting added to TrainConfig after the run was
    made is absent there: the run had its default."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}

    def value(d: dict[str, Any], k: str) -> Any:
        v = d.get(k, defaults.get(k))
        return DEFAULT_BATCH_SIZE if k == "batch_size" and v is None else v  # runs before "None" saved 256

    return [f"{k} {value(saved, k)!r} there, {value(want, k)!r} here" for k in want
            if k not in RECIPE_NEUTRAL and value(saved, k) != value(want, k)]


def _stale(cfg: TrainConfig, path: Path) -> tuple[str, list[str]] | None:
    """``(finished|unfinished, differences)`` when ``path`` holds a run whose recipe differs from ``cfg``'s
    (resolved: the optimizer's default learning rate filled in, as the run saved it); else None."""
    run = RunDir(path)
    if not (run.metrics.is_file() or run.checkpoint.is_file()) or not run.config.is_file():
        return None
    config = run.read_json("config.json")
    saved = config.get("train", {}) if isinstance(config, dict) else {}
    saved = saved if isinstance(saved, dict) else {}
    resolved = config.get("resolved", {}).get("batch_size") if isinstance(config, dict) else None
    if saved.get("batch_size") is None and isinstance(resolved, int) and resolved > DEFAULT_BATCH_SIZE:
        saved = dict(saved, batch_size=resolved)  # made when the default batch was larger (256 before 2026-12)
    diff = recipe_differences(saved, replace(cfg).validate().to_dict())
    return ("finished" if run.metrics.is_file() else "unfinished", diff) if diff else None


def check_reusable(cfg: TrainConfig, path: str | Path) -> None:
    """Raise :class:`RecipeMismatchError` if ``path`` holds a finished or resumable run whose recipe differs
    from ``cfg``'s (resolved: the optimizer's default learning rate filled in, as the run saved it)."""
    stale = _stale(cfg, Path(path))
    if stale:
        what, diff = stale
        raise RecipeMismatchError(f"{path} holds a {what} {cfg.model} run of another recipe ({'; '.join(diff)}); "
                                  "pass --overwrite to train it again, or choose another --out")


def fit_or_reuse(cfg: TrainConfig, path: str | Path, *, overwrite: bool = False, replace_stale: bool = False,
                 log: Callable[[str], None] = print, progress: bool | None = None) -> tuple[dict[str, Any], str]:
    """Return ``(metrics, how)`` for ``cfg`` trained into ``path``; ``how`` is ``"reused"`` (a finished
    run of the same recipe is there: ``metrics.json`` marks it complete), ``"resumed"`` (a checkpoint of
    the same recipe is there) or ``"trained"``. ``overwrite`` trains again from scratch. A run of another
    recipe is a :class:`RecipeMismatchError` (:func:`check_reusable`), never silently reused; with
    ``replace_stale`` (for a folder cnnlab keeps for itself, like the lecture report's) it is trained again,
    and the log says why.
    """
    path = Path(path)
    run = RunDir(path)
    if not overwrite:
        stale = _stale(cfg, path) if replace_stale else None
        if stale:
            log(f"{cfg.model}: {path} holds a run of another recipe ({'; '.join(stale[1])}): training it again")
            overwrite = True
        else:
            check_reusable(cfg, path)
    if not overwrite and run.metrics.is_file():
        log(f"{cfg.model}: reusing the finished run in {path} (pass --overwrite to train again)")
        return run.read_json("metrics.json"), "reused"
    if not overwrite and run.checkpoint.is_file():
        log(f"{cfg.model}: resuming the unfinished run in {path}")
        return fit(resume=path, log=log, progress=progress), "resumed"
    # a folder killed before its first checkpoint is started again by fit (RunDir.claim)
    log(f"{cfg.model}: training into {path} ({cfg.epochs} epochs)")
    return fit(cfg, path, overwrite=overwrite, log=log, progress=progress), "trained"
