"""Batches from tensors held in memory, with augmentation done on whole batches.

Fashion-MNIST is 55 MB as uint8, so the whole dataset lives in memory (on the training device)
and a batch is an index into it. Measured on a 2-core CPU (bench/RESULTS.md), loading is not the
bottleneck either way (a ``DataLoader`` over a ``TensorDataset`` needs about 0.2 s an epoch); what
this loader adds is determinism and augmentation on the device.

Every random choice is a pure function of ``(seed, epoch, step)``: the order of an epoch and the
augmentation of a batch can be recomputed from those numbers alone, so a run resumed in the
middle of an epoch sees exactly the batches an uninterrupted run would, and in distributed
training every rank agrees on the global batch and takes its own slice of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Augment", "BatchLoader", "derive_seed", "random_crop", "random_erasing", "random_hflip", "normalize"]


@dataclass(frozen=True)
class Augment:
    """Batch augmentation: random crop after zero padding by ``crop_padding`` pixels, horizontal flip, and
    random erasing of a rectangle in a share ``erasing`` of the images (:func:`random_erasing`)."""

    crop_padding: int = 0
    hflip: bool = False
    erasing: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.hflip or self.erasing > 0


def derive_seed(*key: int) -> int:
    """A 63-bit seed that is a pure function of the integers ``key`` (e.g. seed, epoch, step)."""
    # SeedSequence takes non-negative ints: zigzag-map negatives so seed -3 differs from seed 3
    words = [2 * int(k) if k >= 0 else -2 * int(k) - 1 for k in key]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0]) & 0x7FFF_FFFF_FFFF_FFFF


def _generator(*key: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*key))


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad each image of ``x`` (B, C, H, W) by ``padding`` and crop back to (H, W) at a random offset."""
    if padding <= 0:
        return x
    b, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    off = torch.randint(0, 2 * padding + 1, (2, b), generator=gen).to(x.device)
    rows = off[0, :, None] + torch.arange(h, device=x.device)
    cols = off[1, :, None] + torch.arange(w, device=x.device)
    xp = xp.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))
    return xp.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def random_hflip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images of ``x`` (B, C, H, W) left to right."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


#: Random erasing's rectangle: its share of the image's area and its aspect ratio (height / width, drawn
#: log-uniformly) -- Zhong et al. 2017's ranges, as torchvision's ``RandomErasing`` defaults.
ERASING_AREA = (0.02, 0.33)
ERASING_RATIO = (0.3, 3.3)


def random_erasing(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al. 2017, "Random erasing data augmentation"), for a whole uint8 batch
    ``x`` (B, C, H, W) at once: each image, with probability ``p``, gets one rectangle of ``ERASING_AREA`` of its
    area and an ``ERASING_RATIO`` aspect ratio, at a uniformly random place, filled with uniform random pixel
    values (the paper's RE-R). torchvision's ``RandomErasing`` does the same for one image at a time, from the
    global random state; this one draws from ``gen`` so that a resumed run repeats it."""
    if p <= 0:
        return x
    b, c, h, w = x.shape
    u = torch.rand(5, b, generator=gen)
    area = h * w * (ERASING_AREA[0] + u[0] * (ERASING_AREA[1] - ERASING_AREA[0]))
    lo, hi = math.log(ERASING_RATIO[0]), math.log(ERASING_RATIO[1])
    ratio = torch.exp(lo + u[1] * (hi - lo))
    eh = (area * ratio).sqrt().round().clamp(1, h).long()
    ew = (area / ratio).sqrt().round().clamp(1, w).long()
    top = (u[2] * (h - eh + 1)).long()
    left = (u[3] * (w - ew + 1)).long()
    rows = torch.arange(h)[None, :]
    cols = torch.arange(w)[None, :]
    inside = (((rows >= top[:, None]) & (rows < (top + eh)[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < (left + ew)[:, None]))[:, None, :])  # (B, H, W)
    inside &= (u[4] < p)[:, None, None]
    noise = torch.randint(0, 256, x.shape, generator=gen, dtype=torch.uint8)
    return torch.where(inside[:, None].to(x.device), noise.to(x.device, x.dtype), x)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (B, C, H, W) in 0..255 -> float32 ``(x / 255 - mean) / std`` per channel."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * 255.0
    return (x.float() - m) / s


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The inverse of :func:`normalize` for display: normalised float (..., C, H, W) -> ``x * std + mean``
    per channel, clamped to the picture's [0, 1]."""
    shape = (-1, 1, 1)
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(shape)
    return (x.detach().float() * s + m).clamp(0, 1)


def input_range(mean: Sequence[float], std: Sequence[float]) -> tuple[float, float]:
    """The interval every normalised value of a [0, 1] picture lies in, over all channels:
    ``(min (0 - mean) / std, max (1 - mean) / std)`` -- the bound an optimised input must stay inside to
    remain an image the model could be shown."""
    return (min((0.0 - m) / s for m, s in zip(mean, std)), max((1.0 - m) / s for m, s in zip(mean, std)))


class BatchLoader:
    """Iterate over (images, labels) batches of an in-memory uint8 dataset.

    Args:
        images: uint8 tensor (N, C, H, W).
        labels: int64 tensor (N,).
        batch_size: the *global* batch size; with ``world_size`` > 1 each rank yields
            ``batch_size // world_size`` images of every global batch.
        shuffle: a new order every epoch (seeded by ``seed`` and the epoch).
        drop_last: drop the last incomplete batch (training does, so every step has the same size).
        augment: batch augmentation, applied before normalisation.
        mean, std: per-channel statistics in [0, 1] units used to normalise.
        device: where batches are produced (the data is moved there once).
        channels_last: yield batches in channels-last memory format.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        augment: Augment | None = None,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by the {world_size} processes")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if world_size > 1 and not drop_last:
            raise ValueError("sharding over processes needs drop_last=True (every rank takes an equal slice)")
        if drop_last and len(images) < batch_size:
            raise ValueError(
                f"batch size {batch_size} is larger than the {len(images)} training images; use a smaller batch size"
            )
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.augment = augment or Augment()
        self.mean, self.std = tuple(mean), tuple(std)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last = channels_last

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Images seen per epoch across all ranks."""
        return len(self) * self.batch_size if self.drop_last else len(self.images)

    def order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.images))
        return torch.randperm(len(self.images), generator=_generator(self.seed, epoch, 1))

    def epoch(self, epoch: int = 0, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of ``epoch``, starting at batch ``start_step``."""
        order = self.order(epoch).to(self.device)
        for step in range(start_step, len(self)):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            x = self.images[idx]
            if self.augment.enabled:
                gen = _generator(self.seed, epoch, 2, step)
                x = random_crop(x, self.augment.crop_padding, gen)
                if self.augment.hflip:
                    x = random_hflip(x, gen)
                x = random_erasing(x, self.augment.erasing, gen)
            if self.world_size > 1:
                per = len(idx) // self.world_size
                sl = slice(self.rank * per, (self.rank + 1) * per)
                x, idx = x[sl], idx[sl]
            x = normalize(x, self.mean, self.std)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)
