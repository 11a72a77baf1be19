"""The training engine: ``fit`` a registered model on a named dataset into a run directory, and
``evaluate`` a model on in-memory batches.

Determinism and resumption: the order of each epoch, each batch's augmentation and the dropout
masks of each step are pure functions of ``(seed, epoch, step, rank)`` (the global RNG is reseeded
every step), and the learning rate is a pure function of the step. A checkpoint therefore needs
only the model, the optimizer and the position, and a run resumed from any checkpoint performs
exactly the steps an uninterrupted run would (bitwise on the same CPU and thread count).
"""

from __future__ import annotations

import contextlib
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
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.data import Augment, BatchLoader, DataSplits, derive_seed
from cnnlab.models import (ZOO_PREFIX, build_from_spec, count_parameters, create_model, has_conv2d, head_module,
                           model_entrypoint, model_spec)
from cnnlab.train.checkpoint import load_checkpoint, save_checkpoint, save_weights
from cnnlab.train.config import DEFAULT_BATCH_SIZE, ConfigError, TrainConfig
from cnnlab.train.distributed import DistInfo, cleanup_distributed, init_distributed
from cnnlab.train.rundir import RunDir, RunError, default_run_dir, machine_info
from cnnlab.train.schedule import lr_factor
from cnnlab.train.transfer import build_transfer_model, source_name

__all__ = [
    "fit", "evaluate", "resolve_device", "resolve_precision", "autocast", "build_optimizer",
    "TrainingDivergedError", "TrainingInterrupted", "make_eval_loader",
]


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM: a checkpoint was written and the run can be resumed. ``exit_code``: 130 after SIGINT,
    143 after SIGTERM (128 + the signal, as a shell reports a process the signal ended)."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; anything else is a
    :class:`ConfigError` naming the valid values."""
    index = name[5:] if name.startswith("cuda:") else None
    if name not in ("auto", "cpu", "cuda") and not (index is not None and index.isdigit()):
        raise ConfigError(f"--device {name!r} is not valid; choose one of: auto, cpu, cuda, cuda:N")
    if index is not None and torch.cuda.is_available() and int(index) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto`` is bf16 where the hardware computes it natively (CUDA with bf16, or a CPU with
    AVX512-BF16/AMX, which oneDNN uses), fp32 elsewhere."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


def make_eval_loader(images, labels, data: dict | DataSplits, device, batch_size=1000, channels_last=False):
    mean = data.mean if isinstance(data, DataSplits) else data["mean"]
    std = data.std if isinstance(data, DataSplits) else data["std"]
    return BatchLoader(images, labels, batch_size, mean=mean, std=std, device=device, channels_last=channels_last)


@torch.inference_mode()
def evaluate(model: nn.Module, loader: BatchLoader, num_classes: int, precision: str = "fp32") -> dict[str, Any]:
    """Loss, accuracy, per-class accuracy and confusion matrix (rows: true, columns: predicted).

    The model is put in eval mode and returned to the mode it had.
    """
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=loader.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=loader.device)
    nonfinite = torch.zeros((), dtype=torch.int64, device=loader.device)
    try:
        for x, y in loader:
            with autocast(loader.device, precision):
                out = model(x)
            nonfinite += (~torch.isfinite(out)).any(1).sum()
            loss_sum += F.cross_entropy(out.float(), y, reduction="sum").double()
            confusion += torch.bincount(y * num_classes + out.argmax(1), minlength=num_classes**2).view(
                num_classes, num_classes
            )
    finally:
        model.train(was_training)
    cm = confusion.cpu()
    n = int(cm.sum())
    per_class = (cm.diag().double() / cm.sum(1).clamp_min(1).double()).tolist()
    return {
        "loss": float(loss_sum) / max(n, 1),
        "accuracy": float(cm.diag().sum()) / max(n, 1),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
        "count": n,
        "nonfinite_outputs": int(nonfinite),  # images whose outputs hold a NaN or inf (broken weights)
    }


class _StopFlag:
    """The first Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step and save a checkpoint;
    a second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.set = False
        self.signum = signal.SIGINT
        self._old: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:
            raise KeyboardInterrupt
        self.set, self.signum = True, signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"\ncnnlab: {name}: stopping after this step and saving a checkpoint (again to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _progress_enabled(progress: bool | None, dist_info: DistInfo) -> bool:
    if not dist_info.is_main:
        return False
    return sys.stderr.isatty() if progress is None else progress


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
    return_model: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], nn.Module]:
    """Train ``cfg.model`` on ``cfg.dataset`` and write a run directory; return the final metrics
    (and the trained model, with ``return_model``).

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
        return (metrics, model) if return_model else metrics
    finally:
        cleanup_distributed()


def _fit(cfg, run: RunDir, dev, dist_info: DistInfo, *, resumed, overwrite, data, progress, log):
    if dist_info.enabled and dev.type == "cuda":
        dev = torch.device("cuda", dist_info.local_rank)
    precision = resolve_precision(cfg.precision, dev)
    if resumed and run.metrics.is_file():
        log(f"{run.path}: already complete; nothing to resume")
        from cnnlab.train.rundir import load_run

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


def _train(cfg, run: RunDir, dev, dist_info: DistInfo, precision: str, claim, *, resumed, data, progress, log):
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
        h, w = data.image_size
        kwargs = {"in_channels": data.in_channels, "num_classes": data.num_classes,
                  "image_size": h if h == w else [h, w]}
        kwargs.update(cfg.model_kwargs)
        model = create_model(cfg.model, **kwargs).to(dev)
    channels_last = cfg.channels_last and has_conv2d(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)

    augment = Augment(cfg.crop_padding, cfg.hflip) if cfg.augment else Augment()
    train_loader = BatchLoader(
        data.train_x, data.train_y, batch_size, shuffle=True, drop_last=True, augment=augment,
        mean=data.mean, std=data.std, seed=cfg.seed, rank=dist_info.rank, world_size=dist_info.world_size,
        device=dev, channels_last=channels_last,
    )
    val_loader = (make_eval_loader(data.val_x, data.val_y, data, dev, cfg.eval_batch_size, channels_last)
                  if len(data.val_y) else None)
    steps_per_epoch = len(train_loader)
    total_steps = cfg.epochs * steps_per_epoch

    state: dict[str, Any] = {"epoch": 0, "step": 0, "history": [], "train_seconds": 0.0, "partial": None}
    if resumed and run.checkpoint.is_file():
        state = load_checkpoint(run.checkpoint, model, optimizer)
        log(f"resuming {run.path} at epoch {state['epoch'] + 1}, step {state['step']} of {steps_per_epoch}")
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
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history: list[dict[str, Any]] = state["history"]
    check_every = 1 if dev.type == "cpu" else 25

    def checkpoint(epoch: int, step: int, partial) -> None:
        if dist_info.is_main:
            save_checkpoint(run.checkpoint, model, optimizer, {
                "epoch": epoch, "step": step, "history": history, "train_seconds": train_seconds,
                "partial": partial, "steps_per_epoch": steps_per_epoch,
            })

    train_seconds = float(state["train_seconds"])
    start_epoch, start_step = int(state["epoch"]), int(state["step"])
    last_ckpt = time.monotonic()
    with _StopFlag() as stop:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            first = start_step if epoch == start_epoch else 0
            partial = state.get("partial") if epoch == start_epoch and first else None
            # running (loss, correct, count) of this rank's shard; the epoch's train loss and accuracy are
            # rank 0's (with several ranks, an estimate from 1/world_size of the epoch's images), which
            # is what a checkpoint can hold without a collective
            sums = torch.tensor(partial[:3] if partial else [0.0, 0.0, 0.0], dtype=torch.float64, device=dev)
            seconds = float(partial[3]) if partial and len(partial) > 3 else 0.0
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           unit="batch", dynamic_ncols=True, leave=True, file=sys.stderr)
            t0 = time.perf_counter()
            for step, (x, y) in enumerate(train_loader.epoch(epoch, first), start=first):
                lr = cfg.lr * lr_factor(cfg.schedule, epoch * steps_per_epoch + step, total_steps, cfg.warmup)
                for g in optimizer.param_groups:
                    g["lr"] = lr * g.get("lr_scale", 1.0)
                torch.manual_seed(derive_seed(cfg.seed, epoch, step, dist_info.rank, 3))
                with autocast(dev, precision):
                    out = train_model(x)
                loss = criterion(out.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss = loss.detach()
                sums += torch.stack([loss.double() * len(y), (out.argmax(1) == y).sum().double(),
                                     torch.tensor(float(len(y)), dtype=torch.float64, device=dev)])
                if (step + 1) % check_every == 0 or step + 1 == steps_per_epoch:
                    if not math.isfinite(float(sums[0])):
                        raise TrainingDivergedError(_diverged(run, f"loss became {float(loss)} at epoch {epoch + 1} "
                                                                   f"step {step + 1}", cfg.lr, resumed))
                if bar is not None:
                    bar.update(1)
                    if step % 10 == 0 or step + 1 == steps_per_epoch:
                        s = sums.tolist()
                        el = time.perf_counter() - t0 + seconds
                        bar.set_postfix(loss=f"{s[0] / s[2]:.4f}", acc=f"{s[1] / s[2]:.4f}",
                                        img_s=f"{s[2] * dist_info.world_size / max(el, 1e-9):.0f}", lr=f"{lr:.2e}")
                done = step + 1 == steps_per_epoch
                if not done and (stop.set or time.monotonic() - last_ckpt > cfg.checkpoint_interval):
                    if not math.isfinite(float(sums[0])):
                        raise TrainingDivergedError(_diverged(run, f"loss became non-finite at epoch {epoch + 1} "
                                                                   f"step {step + 1}", cfg.lr, resumed))
                    el = time.perf_counter() - t0
                    checkpoint(epoch, step + 1, sums.tolist() + [seconds + el])
                    last_ckpt = time.monotonic()
                    if stop.set:
                        if bar is not None:
                            bar.close()
                        raise TrainingInterrupted(
                            f"interrupted at epoch {epoch + 1} step {step + 1}; checkpoint saved. "
                            f"Resume with: cnnlab train --resume {run.path}", stop.signum
                        )
            epoch_seconds = time.perf_counter() - t0 + seconds
            if bar is not None:
                bar.close()
            s = sums.tolist()
            train_seconds += epoch_seconds
            row = {"epoch": epoch + 1, "train_loss": s[0] / s[2], "train_acc": s[1] / s[2],
                   "val_loss": None, "val_acc": None, "lr": lr, "seconds": epoch_seconds,
                   "images_per_s": s[2] * dist_info.world_size / epoch_seconds}
            if val_loader is not None:
                v = evaluate(model, val_loader, data.num_classes, precision)
                row.update(val_loss=v["loss"], val_acc=v["accuracy"])
            history.append(row)
            log(_epoch_line(row, cfg.epochs))
            checkpoint(epoch + 1, 0, None)
            last_ckpt = time.monotonic()
            if dist_info.is_main:
                run.write_history(history)
            if stop.set:
                raise TrainingInterrupted(
                    f"interrupted after epoch {epoch + 1}; checkpoint saved. Resume with: cnnlab train --resume {run.path}",
                    stop.signum,
                )

    test_loader = make_eval_loader(data.test_x, data.test_y, data, dev, cfg.eval_batch_size, channels_last)
    test = evaluate(model, test_loader, data.num_classes, precision)
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
        "train_seconds": train_seconds,
        "images_per_s": images / max(train_seconds, 1e-9),
        "params": count_parameters(model),
        "trainable_params": count_parameters(model, trainable_only=True),
        "device": str(dev),
        "precision": precision,
        "world_size": dist_info.world_size,
    }
    if dist_info.is_main:
        from cnnlab.train.plots import plot_confusion, plot_curves

        save_weights(model, run.weights, metadata={"model": cfg.model})
        plot_curves(history, run.path / "curves.png", title=f"{cfg.model} on {data.name}")
        plot_confusion(test["confusion_matrix"], data.classes, run.path / "confusion.png",
                       title=f"{cfg.model}: test accuracy {100 * test['accuracy']:.2f}%")
        run.write_json("metrics.json", metrics)  # last: its presence marks the run complete
    return metrics, model


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
        from safetensors import safe_open

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
