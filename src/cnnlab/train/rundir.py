"""The run directory: the record of every result (see docs/ARCHITECTURE.md).

```
runs/<name>/
  config.json        every setting, the seed, versions, machine
  model.json         registry name + constructor arguments
  model.safetensors  final weights and buffers
  history.csv        one row per epoch
  metrics.json       final test metrics
  curves.png, confusion.png
  checkpoint/last.safetensors   last resumable state
```
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch.nn as nn

from cnnlab._io import atomic_write_json, atomic_write_text
from cnnlab._env import machine_info  # noqa: F401  (re-exported: bench scripts import it from here)
from cnnlab._outdir import RUN, Output, claim_output
from cnnlab.errors import CnnlabError
from cnnlab.models import build_from_spec
from cnnlab.train.checkpoint import load_checkpoint, load_weights
from cnnlab.train.config import TrainConfig

__all__ = [
    "RunDir", "RunError", "RunExistsError", "LoadedRun", "load_run", "machine_info", "default_run_dir",
    "HISTORY_FIELDS", "check_run_data",
]

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")


class RunError(CnnlabError):
    """A run directory is missing, incomplete or unreadable."""


class RunExistsError(RunError, FileExistsError):
    pass


def default_run_dir(model: str) -> Path:
    return Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    config = property(lambda self: self.path / "config.json")
    model_json = property(lambda self: self.path / "model.json")
    weights = property(lambda self: self.path / "model.safetensors")
    history = property(lambda self: self.path / "history.csv")
    metrics = property(lambda self: self.path / "metrics.json")
    checkpoint = property(lambda self: self.path / "checkpoint" / "last.safetensors")

    def claim(self, *, overwrite: bool = False, resume: bool = False, inputs: tuple = (),
              log: Callable[[str], None] = print) -> Output:
        """Claim the folder for this process (:func:`cnnlab._outdir.claim_output`: marker, lock, leftovers of a
        killed writer removed) and check what is there; return the held :class:`~cnnlab._outdir.Output`.

        A new run (not ``resume``) goes into an empty folder, or over a finished or resumable run only with
        ``overwrite`` (cleared later, by the caller, with ``Output.clear``: only cnnlab's files, refused if
        anything else is there). The remains of a run stopped before its first checkpoint (settings, no
        weights) are cleared with a note: nothing of value is lost and nothing blocks the next run.
        """
        flag = "--resume" if resume else "--out"
        if resume and not self.path.is_dir():
            what = "is a file" if self.path.exists() else "does not exist"
            raise RunError(f"--resume {self.path}: {what}; give the run directory that `cnnlab train --out` wrote")
        out = claim_output(self.path, RUN, flag=flag, inputs=inputs)
        try:
            if resume or not out.entries():
                return out
            if self.metrics.is_file() or self.checkpoint.is_file() or self.weights.is_file():
                if not overwrite:
                    what = "a finished run" if self.metrics.is_file() else "an unfinished run"
                    hint = "" if self.metrics.is_file() else f"pass --resume {self.path} to continue it or "
                    raise RunExistsError(f"--out {self.path}: holds {what}; {hint}pass --overwrite to replace it"
                                         + ("" if hint else " (or choose another --out)"))
                out.check_clearable()
            else:
                out.check_clearable()
                log(f"{self.path}: an earlier run stopped before its first checkpoint (nothing to resume); "
                    "starting it again")
                out.clear()
            return out
        except BaseException:
            out.release()
            raise

    def write_history(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        atomic_write_text(self.history, buf.getvalue())

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.path / name, obj)

    def read_json(self, name: str) -> Any:
        p = self.path / name
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            raise RunError(f"{self.path}: not a complete cnnlab run (missing {name})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{p}: corrupt JSON ({e})") from None


@dataclass
class LoadedRun:
    run: RunDir
    config: TrainConfig
    data: dict[str, Any]  # config.json["data"], validated by check_run_data
    model: nn.Module

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one input image, as the run was trained."""
        h, w = self.data["image_size"]
        return int(self.data["in_channels"]), int(h), int(w)


def _number_list(v: Any, n: int | None) -> bool:
    return (isinstance(v, (list, tuple)) and (n is None or len(v) == n)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v))


def check_run_data(data: Any, where: Path, num_outputs: int | None = None) -> dict[str, Any]:
    """``config.json["data"]`` as a run needs it to preprocess images and name classes: ``classes`` (two or
    more names, as many as the model has outputs), ``in_channels``, ``image_size`` (H, W), ``mean`` and
    ``std`` (one number per channel; std > 0). A hand-edited or damaged record is a :class:`RunError`
    naming the field."""
    def bad(field: str, why: str) -> RunError:
        return RunError(f"{where}: data.{field} {why}; this is not the record cnnlab wrote (restore it, or train "
                        "again)")

    if not isinstance(data, dict):
        raise RunError(f"{where}: has no \"data\" record (the classes, image size and normalisation the run was "
                       "trained with); this is not the record cnnlab wrote")
    classes = data.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise bad("classes", f"is {classes!r}, not a list of two or more class names")
    if num_outputs is not None and len(classes) != num_outputs:
        raise bad("classes", f"names {len(classes)} classes but the model has {num_outputs} outputs")
    c = data.get("in_channels")
    if isinstance(c, bool) or not isinstance(c, int) or c < 1:
        raise bad("in_channels", f"is {c!r}, not a positive integer")
    size = data.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                               and v > 0 for v in size)):
        raise bad("image_size", f"is {size!r}, not [height, width] in positive pixels")
    for field in ("mean", "std"):
        if not _number_list(data.get(field), c):
            raise bad(field, f"is {data.get(field)!r}, not a list of {c} number(s), one per channel")
    if min(data["std"]) <= 0:
        raise bad("std", f"is {data['std']!r}; every channel's std must be positive")
    return data


def _num_outputs(model: nn.Module, spec: dict[str, Any]) -> int | None:
    """The number of classes the model predicts: its recorded ``num_classes`` (after a transfer, the new
    head's), else the last layer with ``out_features``; None if neither says."""
    transfer = spec.get("transfer")
    if isinstance(transfer, list) and transfer and isinstance(transfer[-1], dict):
        n = transfer[-1].get("num_classes")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
    n = (spec.get("kwargs") or {}).get("num_classes")
    if isinstance(n, int) and not isinstance(n, bool):
        return n
    last = [m.out_features for m in model.modules() if isinstance(getattr(m, "out_features", None), int)]
    return last[-1] if last else None


def _run_config(run: RunDir, cfg_d: Any) -> TrainConfig:
    if not isinstance(cfg_d, dict) or not isinstance(cfg_d.get("train", {}), dict):
        raise RunError(f"{run.config}: not a cnnlab run's config (no \"train\" settings)")
    try:
        cfg = TrainConfig.from_dict(cfg_d.get("train", {}))
        cfg.validate()
    except (CnnlabError, TypeError, ValueError) as e:
        raise RunError(f"{run.config}: its settings are not valid ({e})") from None
    return cfg


def load_run(path: str | os.PathLike, *, weights: str = "final", map_location: str = "cpu",
             compressed: Callable[[Path, dict[str, Any]], nn.Module] | None = None) -> LoadedRun:
    """Rebuild a run's model from ``model.json`` + its weights (``final``: model.safetensors;
    ``checkpoint``: the last resumable state), with ``config.json`` validated.

    A compressed run's weights are its method's artifact, which ``compress`` (a layer above) knows how to
    rebuild: ``compressed(path, spec)`` does it. :func:`cnnlab.runs.load_run` passes compress's
    ``load_compressed``; without it a compressed run is a :class:`RunError` that says so."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise RunError(f"{run.path}: no such run directory")
    cfg_d = run.read_json("config.json")
    spec = run.read_json("model.json")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise RunError(f"{run.model_json}: not a cnnlab model record (no model \"name\")")
    if "compression" in spec:
        if compressed is None:
            raise RunError(f"{run.path} is a compressed run ({(spec['compression'] or {}).get('method')}); this "
                           "command takes the float run it came from")
        if weights != "final":
            raise RunError(f"{run.path}: a compressed run has only final weights (model.cnnz), no checkpoint")
        if not run.metrics.is_file():
            raise RunError(f"{run.path}: an unfinished compressed run (no metrics.json: it was stopped while being "
                           "written); run its cnnlab compress again")
        cfg = _run_config(run, cfg_d)
        model = compressed(run.path, spec).to(map_location)
        return LoadedRun(run, cfg, check_run_data(cfg_d.get("data"), run.config, _num_outputs(model, spec)), model)
    cfg = _run_config(run, cfg_d)
    try:
        model = build_from_spec(spec)
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise RunError(f"{run.model_json}: cannot rebuild the model ({str(e).splitlines()[0] if str(e) else e!r})") from None
    data = check_run_data(cfg_d.get("data"), run.config, _num_outputs(model, spec))
    if weights == "final":
        if not run.weights.is_file():
            hint = f"; it has a checkpoint: cnnlab train --resume {run.path}" if run.checkpoint.is_file() else ""
            raise RunError(f"{run.path}: has no final weights (model.safetensors){hint}")
        load_weights(model, run.weights)
    else:
        load_checkpoint(run.checkpoint, model)
    model.to(map_location).eval()
    return LoadedRun(run, cfg, data, model)


