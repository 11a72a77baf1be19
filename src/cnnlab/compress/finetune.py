"""Fine-tuning a compressed model with its run's recipe: the :class:`~cnnlab.compress.base.Finetune` cnnlab
passes to the methods that retrain (pruning, weight sharing, INQ, binarization).

The recipe is the base run's (optimizer, weight decay, augmentation, label smoothing, batch size, seed);
the learning rate is ``lr_fraction`` of its peak, held for the first half of the steps and then
cosine-annealed to zero (a short retraining from a good point, not a new one-cycle warm-up).
Training runs in float32: masks and shared values must be exact, and bf16 autocast would round them.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any, Callable

import torch
import torch.nn as nn

from cnnlab.models import has_conv2d
from cnnlab.data import Augment, BatchLoader, DataSplits
from cnnlab.train import TrainConfig
from cnnlab.train.config import DEFAULT_BATCH_SIZE
from cnnlab.train.engine import build_optimizer

__all__ = ["make_finetune"]

#: The fine-tuning learning rate, as a fraction of the recipe's peak learning rate.
DEFAULT_LR_FRACTION = 0.1


def _lr_at(step: int, total: int) -> float:
    half = total // 2
    if step < half:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - half) / max(total - half, 1)))


def make_finetune(cfg: TrainConfig, data: DataSplits, *, device: str | torch.device = "cpu",
                  lr_fraction: float = DEFAULT_LR_FRACTION, max_steps: int | None = None,
                  log: Callable[[str], None] = print) -> Callable[..., list[dict[str, Any]]]:
    """A :class:`~cnnlab.compress.base.Finetune` that trains on ``data.train_*`` with ``cfg``'s recipe.

    ``max_steps``: stop each call after this many steps (tests); None trains whole epochs.
    """
    device = torch.device(device)

    def finetune(model: nn.Module, epochs: int, *, lr_scale: float = 1.0,
                 after_step: Callable[[nn.Module], None] | None = None) -> list[dict[str, Any]]:
        if epochs <= 0:
            return []
        recipe = replace(cfg, lr=cfg.lr * lr_fraction * lr_scale)
        channels_last = recipe.channels_last and has_conv2d(model)
        augment = Augment(recipe.crop_padding, recipe.hflip) if recipe.augment else Augment()
        loader = BatchLoader(data.train_x, data.train_y, min(recipe.batch_size or DEFAULT_BATCH_SIZE, len(data.train_y)), shuffle=True,
                             drop_last=True, augment=augment, mean=data.mean, std=data.std, seed=recipe.seed + 1,
                             device=device, channels_last=channels_last)
        optimizer = build_optimizer(recipe, model)
        criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        steps_per_epoch = len(loader) if max_steps is None else min(len(loader), max_steps)
        total = epochs * steps_per_epoch
        history = []
        model.train()
        try:
            for epoch in range(epochs):
                t0, loss_sum, correct, seen = time.perf_counter(), 0.0, 0, 0
                for step, (x, y) in enumerate(loader.epoch(epoch)):
                    if step >= steps_per_epoch:
                        break
                    lr = recipe.lr * _lr_at(epoch * steps_per_epoch + step, total)
                    for g in optimizer.param_groups:
                        g["lr"] = lr * g.get("lr_scale", 1.0)  # a transferred model's backbone: its multiplier
                    out = model(x)
                    loss = criterion(out.float(), y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if after_step is not None:
                        with torch.no_grad():
                            after_step(model)
                    loss_sum += float(loss.detach()) * len(y)
                    correct += int((out.argmax(1) == y).sum())
                    seen += len(y)
                if not math.isfinite(loss_sum):
                    raise FloatingPointError(f"fine-tuning diverged at epoch {epoch + 1} (loss {loss_sum}); "
                                             "try a smaller learning rate")
                row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                       "lr": lr, "seconds": time.perf_counter() - t0}
                history.append(row)
                log(f"  fine-tune epoch {epoch + 1}/{epochs}  loss {row['train_loss']:.4f}  "
                    f"acc {100 * row['train_acc']:.2f}%  {row['seconds']:.1f}s")
        finally:
            model.eval()
        return history

    return finetune
