"""Dropout with a faster mask on the CPU.

``nn.Dropout`` draws its CPU mask with ``bernoulli_``, one random number per element; on a 2-core
CPU that was 16% of a training step of the lecture's Fashion-MNIST CNN (bench/RESULTS.md). This
module draws 64 random bits per 8 elements and compares each byte with a threshold: the same
inverted dropout (Srivastava et al. 2014) with the drop probability rounded to a multiple of 1/256
(0.25 and 0.5 are exact) and the survivors scaled by the exact inverse of the keep probability, so
the expected output equals the input. It uses PyTorch's default generator, so ``torch.manual_seed``
makes it reproducible. On other devices it is ``nn.Dropout``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Dropout", "dropout_mask_bytes"]


def dropout_mask_bytes(like: torch.Tensor) -> torch.Tensor:
    """Uniform random uint8 values shaped and laid out like ``like`` (CPU, default generator)."""
    n = like.numel()
    words = torch.empty((n + 7) // 8, dtype=torch.int64, device=like.device).random_(-(2**63), 2**63 - 1)
    flat = words.view(torch.uint8)[:n]
    if like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last):
        b, c, h, w = like.shape
        return flat.view(b, h, w, c).permute(0, 3, 1, 2)  # same memory layout: elementwise ops stay fast
    return flat.view(like.shape)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper CPU mask (see the module docstring). ``p`` is the drop probability."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p >= 1.0 or torch.compiler.is_compiling():
            return F.dropout(x, self.p, True, self.inplace)
        keep = dropout_mask_bytes(x) >= self._threshold
        return torch.where(keep, x * (256.0 / (256 - self._threshold)), 0.0)

    @property
    def _threshold(self) -> int:
        """Bytes below this are dropped: p rounded to a multiple of 1/256, kept inside (0, 1)."""
        return min(255, max(1, round(self.p * 256)))

    @property
    def effective_p(self) -> float:
        """The drop probability actually used on the CPU."""
        if self.p == 0.0 or self.p >= 1.0:
            return float(self.p)
        return self._threshold / 256
