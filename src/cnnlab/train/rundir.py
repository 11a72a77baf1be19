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
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnlab._io import atomic_write_json, atomic_write_text
from cnnlab.models import build_from_spec
from cnnlab.train.checkpoint import load_weights
from cnnlab.train.config import TrainConfig

__all__ = [
    "RunDir", "RunError", "RunExistsError", "LoadedRun", "load_run", "machine_info", "default_run_dir",
    "HISTORY_FIELDS",
]

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_s")


class RunError(ValueError):
    """A run directory is missing, incomplete or unreadable."""


class RunExistsError(RunError, FileExistsError):
    pass


def default_run_dir(model: str) -> Path:
    return Path("runs") / f"{model}-{time.strftime('%Y%m%d-%H%M%S')}"


def machine_info(device: torch.device | None = None) -> dict[str, Any]:
    import cnnlab

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cnnlab": cnnlab.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device is not None else None,
        "gpu": torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else None,
    }
    return info


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

    def prepare(self, *, overwrite: bool = False, check_only: bool = False) -> None:
        """Create the folder for a new run. An existing non-empty folder is an error unless
        ``overwrite``; its contents are then removed (only what a run writes). ``check_only``
        raises what creating would raise, and changes nothing."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"--out {self.path}: exists and is not a directory")
        if self.path.is_dir() and any(self.path.iterdir()):
            if not overwrite:
                raise RunExistsError(
                    f"--out {self.path}: run directory exists; pass --resume {self.path} to continue it "
                    "or --overwrite to replace it"
                )
            if not self.config.is_file():
                raise RunError(f"--out {self.path}: not empty and not a cnnlab run; refusing to overwrite it")
            if not check_only:
                shutil.rmtree(self.path)
        if check_only:
            parent = next((p for p in [self.path, *self.path.parents] if p.exists()), None)
            if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK)):
                raise RunError(f"--out {self.path}: cannot write there ({parent} is not a writable directory)")
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise RunError(f"--out {self.path}: cannot write there ({e.strerror or e})") from None

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
    data: dict[str, Any]
    model: nn.Module


def load_run(path: str | os.PathLike, *, weights: str = "final", map_location: str = "cpu") -> LoadedRun:
    """Rebuild a run's model from ``model.json`` + its weights (``final``: model.safetensors;
    ``checkpoint``: the last resumable state)."""
    run = RunDir(Path(path))
    if not run.path.is_dir():
        raise RunError(f"{run.path}: no such run directory")
    cfg_d = run.read_json("config.json")
    spec = run.read_json("model.json")
    if "compression" in spec:
        # a compressed run's weights are its method's artifact; compress sits above train, hence the late
        # import: the one place train reaches up (docs/ARCHITECTURE.md)
        from cnnlab.compress.run import load_compressed

        if weights != "final":
            raise RunError(f"{run.path}: a compressed run has only final weights (model.cnnz), no checkpoint")
        model = load_compressed(run.path, spec).to(map_location)
        cfg = TrainConfig.from_dict(cfg_d.get("train", {}))
        return LoadedRun(run, cfg, cfg_d.get("data", {}), model)
    try:
        model = build_from_spec(spec)
    except (ValueError, TypeError, KeyError) as e:
        raise RunError(f"{run.model_json}: cannot rebuild the model ({e})") from None
    if weights == "final":
        if not run.weights.is_file():
            hint = f"; it has a checkpoint: cnnlab train --resume {run.path}" if run.checkpoint.is_file() else ""
            raise RunError(f"{run.path}: has no final weights (model.safetensors){hint}")
        load_weights(model, run.weights)
    else:
        from cnnlab.train.checkpoint import load_checkpoint

        load_checkpoint(run.checkpoint, model)
    model.to(map_location).eval()
    cfg = TrainConfig.from_dict(cfg_d.get("train", {}))
    return LoadedRun(run, cfg, cfg_d.get("data", {}), model)


