"""Training: the engine, checkpoints, the run directory and distributed set-up."""

from cnnlab.train.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint, save_weights
from cnnlab.train.config import ConfigError, TrainConfig
from cnnlab.train.engine import (
    TrainingDivergedError,
    TrainingInterrupted,
    autocast,
    build_optimizer,
    evaluate,
    fit,
    make_eval_loader,
    resolve_device,
    resolve_precision,
)
from cnnlab.train.rundir import LoadedRun, RunDir, RunError, RunExistsError, load_run
from cnnlab.train.transfer import build_transfer_model, extract_features, source_name

__all__ = [
    "CheckpointError", "load_checkpoint", "load_weights", "save_checkpoint", "save_weights",
    "ConfigError", "TrainConfig", "TrainingDivergedError", "TrainingInterrupted", "autocast",
    "build_optimizer", "evaluate", "fit", "make_eval_loader", "resolve_device", "resolve_precision",
    "LoadedRun", "RunDir", "RunError", "RunExistsError", "load_run", "build_transfer_model", "extract_features",
    "source_name",
]
