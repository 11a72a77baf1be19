"""Training: the engine, evaluation, devices and precision, checkpoints, the run directory and distributed set-up."""

from cnnlab.train.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint, save_weights
from cnnlab.train.config import ConfigError, TrainConfig
from cnnlab.train.device import autocast, resolve_device, resolve_precision
from cnnlab.train.engine import FitResult, TrainingDivergedError, TrainingInterrupted, build_optimizer, fit
from cnnlab.train.evaluation import EvalSet, eval_set, evaluate, evaluate_run, make_eval_loader
from cnnlab.train.rundir import LoadedRun, RunDir, RunError, RunExistsError, load_run
from cnnlab.train.transfer import build_transfer_model, extract_features, source_name

__all__ = [
    "CheckpointError", "load_checkpoint", "load_weights", "save_checkpoint", "save_weights",
    "ConfigError", "TrainConfig", "TrainingDivergedError", "TrainingInterrupted", "autocast",
    "build_optimizer", "evaluate", "evaluate_run", "eval_set", "EvalSet", "fit", "FitResult",
    "make_eval_loader", "resolve_device", "resolve_precision",
    "LoadedRun", "RunDir", "RunError", "RunExistsError", "load_run", "build_transfer_model", "extract_features",
    "source_name",
]
