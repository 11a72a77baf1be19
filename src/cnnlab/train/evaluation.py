"""Evaluating a model on a dataset's test split: the loader, the metrics, and a trained run evaluated the one way
``cnnlab eval``, ``cnnlab compress`` and the training engine's last step all do it (the run's normalisation, its
memory format, its classes)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.data import BatchLoader, DataSplits
from cnnlab.errors import NonFiniteError
from cnnlab.models import has_conv2d
from cnnlab.train.config import TTA_METHODS, ConfigError
from cnnlab.train.device import autocast, resolve_precision
from cnnlab.train.rundir import LoadedRun

__all__ = ["make_eval_loader", "evaluate", "EvalSet", "eval_set", "evaluate_run", "TTA_METHODS",
           "check_tta", "tta_label", "tta_metrics"]


def make_eval_loader(images: torch.Tensor, labels: torch.Tensor, data: dict | DataSplits, device: Any, *,
                     batch_size: int = 1000, channels_last: bool = False) -> BatchLoader:
    """Unshuffled, unaugmented batches of ``images``, normalised with ``data``'s mean and std (a
    :class:`DataSplits` or a run's ``config.json["data"]``)."""
    mean = data.mean if isinstance(data, DataSplits) else data["mean"]
    std = data.std if isinstance(data, DataSplits) else data["std"]
    return BatchLoader(images, labels, batch_size, mean=mean, std=std, device=device, channels_last=channels_last)


def check_tta(tta: str | None) -> str | None:
    """``tta`` itself when it is None or one of ``TTA_METHODS``; else a :class:`ConfigError` naming them."""
    if tta is not None and tta not in TTA_METHODS:
        raise ConfigError(f"--tta {tta!r} is not a test-time augmentation cnnlab knows; choose one of: "
                          f"{', '.join(TTA_METHODS)}")
    return tta


def tta_label(tta: str | None) -> str:
    """How a result with test-time augmentation is labelled: ``"with flip TTA"`` ('' without one)."""
    return f"with {tta} TTA" if tta else ""


def _logits(model: nn.Module, x: torch.Tensor, tta: str | None) -> torch.Tensor:
    """The model's float logits for ``x``; with ``tta="flip"`` the log of the mean of the softmax over ``x`` and
    ``x`` mirrored left to right (so ``argmax`` and the cross-entropy are those of the averaged prediction)."""
    out = model(x).float()
    if tta == "flip":
        mirrored = model(x.flip(-1)).float()
        out = torch.logsumexp(torch.stack([out.log_softmax(1), mirrored.log_softmax(1)]), 0) - math.log(2.0)
    return out


@torch.inference_mode()
def evaluate(model: nn.Module, loader: BatchLoader, num_classes: int, precision: str = "fp32", *,
             tta: str | None = None) -> dict[str, Any]:
    """Loss, accuracy, per-class accuracy and confusion matrix (rows: true, columns: predicted), and the
    number of images whose outputs are not finite; with ``tta`` (one of ``TTA_METHODS``: ``"flip"`` averages
    the class probabilities of each image and its left-right mirror) those of the test-time-augmented
    prediction, and ``"tta"`` in the result names it.

    The model is put in eval mode and returned to the mode it had.
    """
    check_tta(tta)
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=loader.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=loader.device)
    nonfinite = torch.zeros((), dtype=torch.int64, device=loader.device)
    try:
        for x, y in loader:
            with autocast(loader.device, precision):
                out = _logits(model, x, tta)
            nonfinite += (~torch.isfinite(out)).any(1).sum()
            loss_sum += F.cross_entropy(out, y, reduction="sum").double()
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
        "tta": tta,
    }


@dataclasses.dataclass
class EvalSet:
    """A run's test split, batched as the run is evaluated: normalised with the run's statistics, in its memory
    format (channels-last when it trained so and has 2D convolutions)."""

    loader: BatchLoader
    classes: list[str]
    channels_last: bool

    def prepare(self, model: nn.Module) -> nn.Module:
        """``model`` in the memory format the batches come in (in place, as ``Module.to`` is)."""
        if self.channels_last and has_conv2d(model):
            model = model.to(memory_format=torch.channels_last)
        return model

    def evaluate(self, model: nn.Module, precision: str = "fp32", *, tta: str | None = None) -> dict[str, Any]:
        """:func:`evaluate` of ``model`` (in this set's memory format) on these batches."""
        return evaluate(self.prepare(model), self.loader, len(self.classes), precision, tta=tta)


def eval_set(run: LoadedRun, data: DataSplits, *, device: Any = "cpu") -> EvalSet:
    """``data``'s test split as ``run`` is evaluated: its recorded normalisation, batch size, memory format
    and classes (the run's record, not the data's: a run trained on a class selection keeps its names)."""
    cfg = run.config
    channels_last = bool(cfg.channels_last) and has_conv2d(run.model)
    loader = make_eval_loader(data.test_x, data.test_y, run.data, device, batch_size=cfg.eval_batch_size,
                              channels_last=channels_last)
    return EvalSet(loader, list(run.data.get("classes", data.classes)), channels_last)


def evaluate_run(run: LoadedRun, *, data: DataSplits | None = None, data_dir: str | None = None,
                 device: Any = "cpu", tta: str | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``run``'s test metrics from its saved weights, as ``cnnlab eval`` prints them: ``test_accuracy``,
    ``test_loss``, ``test_images``, ``per_class_accuracy`` (by class name) and ``confusion_matrix``; with
    ``tta`` (one of ``TTA_METHODS``) also ``"tta"``: the same metrics of the test-time-augmented
    prediction and their ``label`` ("with flip TTA"). The plain ones stay the run's test accuracy.

    ``data`` (already loaded) or the run's dataset, loaded as it was recorded (``data_dir`` replaces the
    recorded folder). The run's precision is resolved for ``device`` (bf16 where it trained so and the hardware
    has it). Outputs that are NaN or infinite are a :class:`NonFiniteError`: the weights are broken.
    """
    check_tta(tta)
    if data is None:
        data = run.config.load_data(data_dir=data_dir, log=log)
    device = torch.device(device)
    test = eval_set(run, data, device=device)
    precision = resolve_precision(run.config.precision, device)
    m = test.evaluate(run.model, precision)
    if m["nonfinite_outputs"]:
        raise NonFiniteError(f"{run.run.path}: the model's outputs are not finite (NaN or inf) for "
                             f"{m['nonfinite_outputs']} of {m['count']} test images; its weights are broken (a "
                             "diverged or corrupted run)")
    result = _test_metrics(m, test.classes)
    if tta is not None:
        result["tta"] = tta_metrics(test.evaluate(run.model, precision, tta=tta), test.classes)
    return result


def _test_metrics(m: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    return {"test_accuracy": m["accuracy"], "test_loss": m["loss"], "test_images": m["count"],
            "per_class_accuracy": dict(zip(classes, m["per_class_accuracy"])),
            "confusion_matrix": m["confusion_matrix"]}


def tta_metrics(m: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    """An :func:`evaluate` result with test-time augmentation as a run records it: the method, its ``label``
    and the test metrics of the augmented prediction."""
    return {"method": m["tta"], "label": tta_label(m["tta"]), **_test_metrics(m, classes)}
