"""A stand-in compression method for testing the orchestration: weights rounded to float16 values."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnlab.compress.base import CompressError, Compressed


def compress_fake(model: nn.Module, *, level: int = 1, finetune=None, finetune_epochs: int = 0) -> Compressed:
    if level not in (1, 2):
        raise CompressError(f"level must be 1 or 2; got {level}")
    if finetune is not None and finetune_epochs:
        finetune(model, finetune_epochs)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    return Compressed(model.eval(), tensors, {"level": level}, {"layers": len(tensors)})


def rebuild_fake(base: nn.Module, tensors: dict[str, torch.Tensor], meta: dict) -> nn.Module:
    base.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    return base.eval()
