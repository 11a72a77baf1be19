"""The training engine: ``fit`` a registered model on a named dataset into a run directory, and
``evaluate`` a model on in-memory batches.

Determinism and resumption: the order of each epoch, each batch's augmentation and the dropout
masks of each step are pure functions of ``(seed, epoch, step, rank)`` (the global RNG is reseeded
every step), and the learning rate is a pure function of the step. A checkpoint therefore needs
only the model, the optimizer and the position, and a run resumed from any checkpoint performs
exactly the steps an uninterrupted run would (bitwise on the same CPU and thread count).
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from safetensors import safe_open
from tqdm import tqdm

from cnnlab._env import machine_info
from cnnlab._outdir import Output
from cnnlab.data import Augment, BatchLoader, DataSplits, derive_seed
from cnnlab.errors import CnnlabError
from cnnlab.models import (ZOO_PREFIX, build_for_input, build_from_spec, count_parameters, has_conv2d, head_module,
                           model_entrypoint, model_spec)
from cnnlab.train.checkpoint import load_checkpoint, save_checkpoint, save_weights
from cnnlab.train.config import DEFAULT_BATCH_SIZE, ConfigError, TrainConfig
from cnnlab.train.distributed import DistInfo, cleanup_distributed, init_distributed
from cnnlab.train.device import autocast, resolve_device, resolve_precision
from cnnlab.train.evaluation import evaluate, make_eval_loader, tta_metrics
from cnnlab.train.plots import plot_confusion, plot_curves
from cnnlab.train.rundir import RunDir, RunError, default_run_dir, load_run
from cnnlab.train.schedule import lr_factor
from cnnlab.train.transfer import build_transfer_model, source_name

__all__ = ["fit", "FitResult", "build_optimizer", "TrainingDivergedError", "TrainingInterrupted"]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM: a checkpoint was written and the run can be resumed. ``exit_code``: 130 after SIGINT,
    143 after SIGTERM (128 + the signal, as a shell reports a process the signal ended)."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Weight decay applies to weight matrices and kernels, not to biases or BatchNorm parameters. A
    transferred model's backbone (every trainable parameter outside its new head) learns at
    ``lr * cfg.backbone_lr_mult``: its groups carry that ``lr_scale``, which the schedule applies."""
    def split(params: list[nn.Parameter]) -> list[dict[str, Any]]:
        return [{"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
                {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]

    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = head_module(model)
    if head is None:
        groups = split([p for _, p in trainable])
    else:
        groups = []
        for scale, in_head in ((1.0, True), (cfg.backbone_lr_mult, False)):
            params = [p for n, p in trainable if n.startswith(head + ".") == in_head]
            groups += [dict(g, lr_scale=scale) for g in split(params) if g["params"]]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.AdamW(groups, lr=cfg.lr)


class _StopFlag:
    """The first Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step and save a checkpoint;
    a second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.set = False
        self.signum = signal.SIGINT
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set, self.signum = True, signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\ncnnlab: {name}: stopping after this step and saving a checkpoint (again to abort)", file=sys.stderr)

    def __exit__(self, *exc: Any) -> bool:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _progress_enabled(progress: bool | None, dist_info: DistInfo) -> bool:
    if not dist_info.is_main:
        return False
    return sys.stderr.isatty() if progress is None else progress


class FitResult(dict):
    """What :func:`fit` returns: the run's final metrics (the keys of ``metrics.json``: ``test_accuracy``,
    ``confusion_matrix``, ...), with the trained module as ``.model`` (on every process: under torchrun each
    rank's own copy) and the run directory as ``.run``."""

    def __init__(self, metrics: dict[str, Any], *, model: nn.Module, run: Path) -> None:
        super().__init__(metrics)
        self.model = model
        self.run = run


def fit(
    cfg: TrainConfig | None = None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    data: DataSplits | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    device: str | None = None,
) -> FitResult:
    """Train ``cfg.model`` on ``cfg.dataset`` and write a run directory; return its final metrics (what
    ``metrics.json`` holds) as a :class:`FitResult`, whose ``.model`` is the trained module.

    Args:
        cfg: the settings; ignored with ``resume`` (the run's own ``config.json`` is used). With
            ``cfg.source``, the model is that run's or torchvision model's, transferred to the dataset
            (:func:`cnnlab.train.transfer.build_transfer_model`); a resumed run is rebuilt from its ``model.json``.
        out: the run directory (default ``runs/<model>-<timestamp>``).
        resume: continue the run directory at this path from its last checkpoint.
        overwrite: replace an existing run directory at ``out``.
        data: already-loaded splits (skips loading ``cfg.dataset``).
        progress: a progress bar (default: when stderr is a terminal); else one line per epoch.
        device: with ``resume``, train on this device instead of the one saved.
    """
    if resume is not None:
        run = RunDir(Path(resume))
        if not run.path.is_dir():
            what = "is a file" if run.path.exists() else "does not exist"
            raise RunError(f"--resume {run.path}: {what}; give the run directory that `cnnlab train --out` wrote")
        saved = run.read_json("config.json")
        if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict):
            raise RunError(f"{run.config}: not a cnnlab run's config (no \"train\" settings)")
        cfg = TrainConfig.from_dict(saved["train"])
        if device is not None:
            cfg.device = device
        if not run.checkpoint.is_file() and not run.metrics.is_file():
            raise RunError(f"--resume {run.path}: it stopped before its first checkpoint, so there is nothing to "
                           f"resume; start it again with: cnnlab train --out {run.path} --overwrite (same settings)")
    else:
        cfg = dataclasses.replace(cfg or TrainConfig())  # resolved below into this copy: the caller's is never changed
        run = RunDir(Path(out) if out is not None else default_run_dir(cfg.model))
    cfg.validate()
    if cfg.source is not None and resume is None:  # a transfer: the architecture is the source's
        cfg.model = source_name(cfg)  # a missing source fails here, before any data is loaded
    model_entrypoint(cfg.model)  # an unknown model fails here, before any data is loaded
    dev = resolve_device(cfg.device)
    dist_info = init_distributed(dev.type)
    try:
        metrics, model = _fit(cfg, run, dev, dist_info, resumed=resume is not None, overwrite=overwrite, data=data,
                              progress=_progress_enabled(progress, dist_info),
                              log=log if dist_info.is_main else (lambda s: None))
        return FitResult(metrics, model=model, run=run.path)
    finally:
        cleanup_distributed()


def _fit(cfg: TrainConfig, run: RunDir, dev: torch.device, dist_info: DistInfo, *, resumed: bool, overwrite: bool,
         data: DataSplits | None, progress: bool, log: Callable[[str], None]) -> tuple[dict[str, Any], nn.Module]:
    if dist_info.enabled and dev.type == "cuda":
        dev = torch.device("cuda", dist_info.local_rank)
    precision = resolve_precision(cfg.precision, dev)
    if resumed and run.metrics.is_file():
        log(f"{run.path}: already complete; nothing to resume")
        return run.read_json("metrics.json"), load_run(run.path, map_location=str(dev)).model
    claim = None
    if dist_info.is_main:  # one writer per run directory, checked before the data is loaded
        source = cfg.source if cfg.source is not None and not cfg.source.startswith(ZOO_PREFIX) else None
        claim = run.claim(overwrite=overwrite, resume=resumed, inputs=() if source is None else (source,), log=log)
    try:
        metrics, model = _train(cfg, run, dev, dist_info, precision, claim, resumed=resumed, data=data,
                                progress=progress, log=log)
    except BaseException:
        if claim is not None:
            try:
                if not resumed and not run.checkpoint.is_file() and not run.metrics.is_file():
                    claim.clear()  # nothing resumable was written: leave nothing that blocks the next run
            except (OSError, CnnlabError):
                pass  # the error that got us here is the one to report
            finally:
                claim.release(failed=True)
        raise
    if claim is not None:
        claim.release()
    return metrics, model


@dataclasses.dataclass
class _Session:
    """What one training run works with, built once by :func:`_build`: the loop reads it and advances
    ``epoch``, ``step``, ``history`` and ``train_seconds``; a checkpoint holds exactly those."""

    cfg: TrainConfig
    run: RunDir
    dev: torch.device
    dist: DistInfo
    precision: str
    data: DataSplits
    model: nn.Module  # the module whose weights are saved
    train_model: nn.Module  # what each step runs: ``model``, or its DistributedDataParallel / compiled wrapper
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    train_loader: BatchLoader
    val_loader: BatchLoader | None
    channels_last: bool
    resumed: bool
    epoch: int = 0  # where the run stands: the epoch and step to do next
    step: int = 0
    partial: list[float] | None = None  # a part-done epoch's (loss, correct, count, seconds) sums
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)

    def checkpoint(self, epoch: int, step: int, partial: list[float] | None) -> None:
        if self.dist.is_main:
            save_checkpoint(self.run.checkpoint, self.model, self.optimizer, {
                "epoch": epoch, "step": step, "history": self.history, "train_seconds": self.train_seconds,
                "partial": partial, "steps_per_epoch": self.steps_per_epoch,
            })

    def diverged(self, what: str) -> TrainingDivergedError:
        return TrainingDivergedError(_diverged(self.run, what, self.cfg.lr, self.resumed))


def _train(cfg: TrainConfig, run: RunDir, dev: torch.device, dist_info: DistInfo, precision: str,
           claim: Output | None, *, resumed: bool, data: DataSplits | None, progress: bool,
           log: Callable[[str], None]) -> tuple[dict[str, Any], nn.Module]:
    s = _build(cfg, run, dev, dist_info, precision, claim, resumed=resumed, data=data, log=log)
    last_ckpt = time.monotonic()
    with _StopFlag() as stop:
        for epoch in range(s.epoch, cfg.epochs):
            row, last_ckpt = _train_epoch(s, epoch, stop, last_ckpt, progress=progress)
            if s.val_loader is not None:
                v = evaluate(s.model, s.val_loader, s.data.num_classes, s.precision)
                row.update(val_loss=v["loss"], val_acc=v["accuracy"])
            s.history.append(row)
            s.train_seconds += row["seconds"]
            s.epoch, s.step, s.partial = epoch + 1, 0, None
            log(_epoch_line(row, cfg.epochs))
            s.checkpoint(epoch + 1, 0, None)
            last_ckpt = time.monotonic()
            if dist_info.is_main:
                run.write_history(s.history)
            if stop.set:
                raise TrainingInterrupted(f"interrupted after epoch {epoch + 1}; checkpoint saved. Resume with: "
                                          f"cnnlab train --resume {run.path}", stop.signum)
    return _finish(s), s.model


def _build(cfg: TrainConfig, run: RunDir, dev: torch.device, dist_info: DistInfo, precision: str,
           claim: Output | None, *, resumed: bool, data: DataSplits | None,
           log: Callable[[str], None]) -> _Session:
    """The data, the model (new, transferred, or the resumed run's own), the optimizer and the loaders; the
    checkpoint's position when resuming, else ``config.json`` and ``model.json`` written."""
    if data is None:
        data = cfg.load_data(log=log)
    batch_size = _batch_size(cfg, len(data.train_y), dist_info.world_size, log)
    if claim is not None and not resumed:
        claim.clear()  # --overwrite: what an earlier run wrote (checked when claimed), now that the data loaded
    if dist_info.enabled:
        torch.distributed.barrier()
    torch.manual_seed(cfg.seed)
    if resumed:  # the run's own record: a transfer run's source may be gone, its normalisation was the source's
        model = build_from_spec(run.read_json("model.json")).to(dev)
        data = data.normalised_as(run.read_json("config.json").get("data", {}))
    elif cfg.source is not None:
        model, data = build_transfer_model(cfg, data)
        model = model.to(dev)
    else:
        model = build_for_input(cfg.model, (data.in_channels, *data.image_size), num_classes=data.num_classes,
                                **cfg.model_kwargs).to(dev)
    channels_last = cfg.channels_last and has_conv2d(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)

    augment = Augment(cfg.crop_padding, cfg.hflip, cfg.random_erasing) if cfg.augment else Augment()
    train_loader = BatchLoader(
        data.train_x, data.train_y, batch_size, shuffle=True, drop_last=True, augment=augment,
        mean=data.mean, std=data.std, seed=cfg.seed, rank=dist_info.rank, world_size=dist_info.world_size,
        device=dev, channels_last=channels_last,
    )
    val_loader = (make_eval_loader(data.val_x, data.val_y, data, dev, batch_size=cfg.eval_batch_size,
                                   channels_last=channels_last) if len(data.val_y) else None)

    state: dict[str, Any] = {}
    if resumed and run.checkpoint.is_file():
        state = load_checkpoint(run.checkpoint, model, optimizer)
        log(f"resuming {run.path} at epoch {state['epoch'] + 1}, step {state['step']} of {len(train_loader)}")
    elif dist_info.is_main:
        run.write_json("config.json", {
            "train": cfg.to_dict(), "resolved": {"device": str(dev), "precision": precision, "batch_size": batch_size,
                                                 "world_size": dist_info.world_size, "channels_last": channels_last},
            "data": data.describe(), "machine": machine_info(dev), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        })
        run.write_json("model.json", model_spec(model))

    train_model: nn.Module = model
    if dist_info.enabled:
        if cfg.sync_bn and dev.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if cfg.compile:
        train_model = torch.compile(train_model)
    return _Session(
        cfg=cfg, run=run, dev=dev, dist=dist_info, precision=precision, data=data, model=model,
        train_model=train_model, optimizer=optimizer,
        criterion=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), train_loader=train_loader,
        val_loader=val_loader, channels_last=channels_last, resumed=resumed, epoch=int(state.get("epoch", 0)),
        step=int(state.get("step", 0)), partial=state.get("partial"), history=state.get("history", []),
        train_seconds=float(state.get("train_seconds", 0.0)),
    )


def _train_epoch(s: _Session, epoch: int, stop: _StopFlag, last_ckpt: float, *,
                 progress: bool) -> tuple[dict[str, Any], float]:
    """One epoch's steps from where the run stands; its history row (without validation) and the time of the
    last checkpoint. Checkpoints mid-epoch every ``cfg.checkpoint_interval`` seconds and when asked to stop
    (then raises :class:`TrainingInterrupted`)."""
    cfg, dev, rank, world = s.cfg, s.dev, s.dist.rank, s.dist.world_size
    steps = s.steps_per_epoch
    total_steps = cfg.epochs * steps
    check_every = 1 if dev.type == "cpu" else 25  # a finite check on CUDA syncs: every 25 steps
    s.model.train()
    first = s.step if epoch == s.epoch else 0
    partial = s.partial if epoch == s.epoch and first else None
    # running (loss, correct, count) of this rank's shard; the epoch's train loss and accuracy are rank 0's
    # (with several ranks, an estimate from 1/world_size of the epoch's images), which is what a checkpoint
    # can hold without a collective
    sums = torch.tensor(partial[:3] if partial else [0.0, 0.0, 0.0], dtype=torch.float64, device=dev)
    seconds = float(partial[3]) if partial and len(partial) > 3 else 0.0
    bar = None
    if progress:
        bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                   dynamic_ncols=True, leave=True, file=sys.stderr)
    lr = cfg.lr
    t0 = time.perf_counter()
    try:
        for step, (x, y) in enumerate(s.train_loader.epoch(epoch, first), start=first):
            lr = cfg.lr * lr_factor(cfg.schedule, epoch * steps + step, total_steps, cfg.warmup)
            for g in s.optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            torch.manual_seed(derive_seed(cfg.seed, epoch, step, rank, 3))
            with autocast(dev, s.precision):
                out = s.train_model(x)
            loss = s.criterion(out.float(), y)
            s.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            s.optimizer.step()
            loss = loss.detach()
            sums += torch.stack([loss.double() * len(y), (out.argmax(1) == y).sum().double(),
                                 torch.tensor(float(len(y)), dtype=torch.float64, device=dev)])
            if (step + 1) % check_every == 0 or step + 1 == steps:
                if not math.isfinite(float(sums[0])):
                    raise s.diverged(f"loss became {float(loss)} at epoch {epoch + 1} step {step + 1}")
            if bar is not None:
                bar.update(1)
                if step % 10 == 0 or step + 1 == steps:
                    t = sums.tolist()
                    el = time.perf_counter() - t0 + seconds
                    bar.set_postfix(loss=f"{t[0] / t[2]:.4f}", acc=f"{t[1] / t[2]:.4f}",
                                    img_s=f"{t[2] * world / max(el, 1e-9):.0f}", lr=f"{lr:.2e}")
            if step + 1 < steps and (stop.set or time.monotonic() - last_ckpt > cfg.checkpoint_interval):
                if not math.isfinite(float(sums[0])):
                    raise s.diverged(f"loss became non-finite at epoch {epoch + 1} step {step + 1}")
                s.checkpoint(epoch, step + 1, sums.tolist() + [seconds + time.perf_counter() - t0])
                last_ckpt = time.monotonic()
                if stop.set:
                    raise TrainingInterrupted(f"interrupted at epoch {epoch + 1} step {step + 1}; checkpoint saved. "
                                              f"Resume with: cnnlab train --resume {s.run.path}", stop.signum)
    finally:
        if bar is not None:
            bar.close()
    epoch_seconds = time.perf_counter() - t0 + seconds
    t = sums.tolist()
    row = {"epoch": epoch + 1, "train_loss": t[0] / t[2], "train_acc": t[1] / t[2], "val_loss": None,
           "val_acc": None, "lr": lr, "seconds": epoch_seconds, "images_per_s": t[2] * world / epoch_seconds}
    return row, last_ckpt


def _finish(s: _Session) -> dict[str, Any]:
    """The test metrics; on the main process the final weights, the plots and ``metrics.json`` (last: its
    presence marks the run complete)."""
    cfg, data, history = s.cfg, s.data, s.history
    test_loader = make_eval_loader(data.test_x, data.test_y, data, s.dev, batch_size=cfg.eval_batch_size,
                                   channels_last=s.channels_last)
    test = evaluate(s.model, test_loader, data.num_classes, s.precision)
    images = sum(r["images_per_s"] * r["seconds"] for r in history)
    metrics = {
        "model": cfg.model,
        "dataset": data.name,
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "test_images": test["count"],
        "per_class_accuracy": dict(zip(data.classes, test["per_class_accuracy"])),
        "classes": list(data.classes),
        "confusion_matrix": test["confusion_matrix"],
        "val_accuracy": history[-1]["val_acc"] if history else None,
        "epochs": cfg.epochs,
        "train_seconds": s.train_seconds,
        "images_per_s": images / max(s.train_seconds, 1e-9),
        "params": count_parameters(s.model),
        "trainable_params": count_parameters(s.model, trainable_only=True),
        "device": str(s.dev),
        "precision": s.precision,
        "world_size": s.dist.world_size,
    }
    if cfg.tta is not None:  # beside the plain test accuracy, never instead of it
        metrics["tta"] = tta_metrics(evaluate(s.model, test_loader, data.num_classes, s.precision, tta=cfg.tta),
                                     list(data.classes))
    if s.dist.is_main:
        save_weights(s.model, s.run.weights, metadata={"model": cfg.model})
        plot_curves(history, s.run.path / "curves.png", title=f"{cfg.model} on {data.name}")
        plot_confusion(test["confusion_matrix"], data.classes, s.run.path / "confusion.png",
                       title=f"{cfg.model}: test accuracy {100 * test['accuracy']:.2f}%")
        s.run.write_json("metrics.json", metrics)
    return metrics


def _batch_size(cfg: TrainConfig, n_train: int, world_size: int, log: Callable[[str], None]) -> int:
    """The global batch: ``cfg.batch_size`` as given (larger than the data is an error), else
    :data:`DEFAULT_BATCH_SIZE`, or the whole training set when it is smaller (said in one line); a multiple of
    the processes."""
    if cfg.batch_size is not None:
        if n_train < cfg.batch_size:
            raise ConfigError(f"--batch-size {cfg.batch_size} is larger than the {n_train} training images; "
                              "use a smaller --batch-size")
        batch = cfg.batch_size
    else:
        batch = min(DEFAULT_BATCH_SIZE, n_train) // world_size * world_size
        if batch < DEFAULT_BATCH_SIZE:
            log(f"note: the {n_train} training images are fewer than the default batch of {DEFAULT_BATCH_SIZE}; "
                f"training with batches of {batch} (--batch-size sets it)")
        if batch < 1:
            raise ConfigError(f"the {n_train} training images cannot be shared by {world_size} processes")
    if batch % world_size:
        raise ConfigError(f"--batch-size {batch} is not divisible by the {world_size} processes")
    return batch


def _diverged(run: RunDir, what: str, lr: float, resumed: bool) -> str:
    """The divergence message: what happened, what was kept (only what exists), what to try."""
    if run.checkpoint.is_file():
        try:
            with safe_open(str(run.checkpoint), framework="pt") as f:
                state = json.loads((f.metadata() or {})["state"])
            at = f" (epoch {state['epoch'] + (1 if state['step'] else 0)}, step {state['step']})"
        except (OSError, ValueError, KeyError, TypeError):
            at = ""
        kept = f"The last good checkpoint{at} is kept in {run.checkpoint}"
    else:
        kept = ("No checkpoint had been written yet, so nothing is kept"
                + (f" and {run.path} is removed" if not resumed else ""))
    return f"{what}; training stopped. {kept}; try a lower --lr (was {lr:g})"


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    val = (f"  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%"
           if row.get("val_acc") is not None else "")
    return (f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%"
            f"{val}  lr {row['lr']:.2e}  {row['seconds']:.1f}s  {row['images_per_s']:.0f} img/s")
